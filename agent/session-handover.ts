// A slot's sessions hand over to each other: each value's inner stream runs until it has
// finished by itself, told of its successor when that arrives, and the successor may wait
// until it has finished. Unlike switchMap, the old one is not cut off: its end (the stop
// of its tcpdump) is part of the stream, which completes only once every inner has.

import { defer, EMPTY, finalize, merge, mergeMap, Observable, ReplaySubject, Subject, type OperatorFunction } from 'rxjs';

export interface Turn<T> {
  /** the value that follows this one, once it arrives (replayed to a late subscriber) */
  next$: Observable<T>;
  /** the value before this one; done$ completes when its inner, and every inner before it, has */
  previous?: { value: T; done$: Observable<never> };
}

/** Per value, `project(value, turn)`, all running at once until each completes by itself. */
export function handOver<T, R>(project: (value: T, turn: Turn<T>) => Observable<R>): OperatorFunction<T, R> {
  return (source) =>
    defer(() => {
      let last: { value: T; next: ReplaySubject<T>; done$: Observable<never> } | undefined;
      return source.pipe(
        mergeMap((value) => {
          const previous = last;
          // told before its successor starts, so a successor in the same netns sees the stop in flight
          previous?.next.next(value);
          previous?.next.complete();
          const next = new ReplaySubject<T>(1);
          const finished = new Subject<never>();
          // settled at once rather than a chain of merges, so a long-lived slot does not build one
          const done = new Subject<never>();
          merge(previous?.done$ ?? EMPTY, finished).subscribe({ complete: () => done.complete() });
          last = { value, next, done$: done.asObservable() };
          return project(value, { next$: next.asObservable(), previous: previous && { value: previous.value, done$: previous.done$ } }).pipe(
            finalize(() => finished.complete()),
          );
        }),
      );
    });
}
