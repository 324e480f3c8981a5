// The slot's hand-over: the old inner is told of its successor and finishes in the stream.

import { concat, ignoreElements, Observable, of, Subject, timer } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { handOver } from '../../agent/session-handover.ts';

const run = (body: (helpers: { cold: TestScheduler['createColdObservable']; expectObservable: TestScheduler['expectObservable'] }) => void) =>
  new TestScheduler((actual, expected) => expect(actual).toEqual(expected)).run(body);

describe('handOver', () => {
  it('each inner runs until it finishes by itself, told of its successor, and the stream completes after the last', () => {
    run(({ cold, expectObservable }) => {
      // an inner finishes 5 ms after it is told
      const out$ = cold('a 9ms b|').pipe(handOver((value, turn) => concat(of(`${value} up`), new Observable<string>((s) => turn.next$.subscribe((next) => timer(5).subscribe(() => (s.next(`${value} ends for ${next}`), s.complete())))))));
      expectObservable(out$).toBe('a 9ms b 4ms c', { a: 'a up', b: 'b up', c: 'a ends for b' });
    });
  });

  it('tells the predecessor before the successor starts, and the successor can wait until every earlier inner has finished', () => {
    const log: string[] = [];
    const values = new Subject<string>();
    const finish = { a: new Subject<void>(), b: new Subject<void>() } as Record<string, Subject<void>>;
    values
      .pipe(
        handOver((value, turn) => {
          log.push(`${value} starts`);
          turn.next$.subscribe((next) => log.push(`${value} told of ${next}`));
          turn.previous?.done$.subscribe({ complete: () => log.push(`${value} sees ${turn.previous!.value} and all before done`) });
          return finish[value]?.pipe(ignoreElements()) ?? of();
        }),
      )
      .subscribe({ complete: () => log.push('complete') });
    values.next('a');
    values.next('b');
    values.next('c');
    values.complete();
    finish.a!.complete();
    // a has finished, which b sees; c waits for b as well
    expect(log).toEqual(['a starts', 'a told of b', 'b starts', 'b told of c', 'c starts', 'b sees a and all before done']);
    finish.b!.complete();
    expect(log.slice(6)).toEqual(['c sees b and all before done', 'complete']);
  });
});
