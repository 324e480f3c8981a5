import { describe, expect, it } from 'vitest';
import { checkFile, parseTcpdumpAscii, parseTsharkFields, summary, type InstanceReport } from '../../local/demo.ts';

const OLD = { uid: '11111111-1111-4111-8111-111111111111', name: 'web-0', node: 'node-1', ip: '10.244.1.2' };
const NEW = { ...OLD, uid: '22222222-2222-4222-8222-222222222222' };
const CLIENT = '10.244.250.7';
const answer = (uid: string) => `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"namespace":"demo","name":"web-0","uid":"${uid}"}\n`;
const hex = (text: string) => Buffer.from(text, 'latin1').toString('hex');

describe('reading capture files back', () => {
  it('takes addresses and the UIDs in payloads from tshark fields', () => {
    const text = [`${CLIENT}\t${OLD.ip}\t`, `${OLD.ip}\t${CLIENT}\t${hex(answer(OLD.uid))}`, ''].join('\n');
    expect(parseTsharkFields(text)).toEqual([
      { src: CLIENT, dst: OLD.ip, uids: [] },
      { src: OLD.ip, dst: CLIENT, uids: [OLD.uid] },
    ]);
  });

  it('takes the same from tcpdump -r -nn -A', () => {
    const text = [
      `13:44:29.063558 eth0  In  IP ${CLIENT}.47814 > ${OLD.ip}.80: Flags [S], seq 1, win 64240, length 0`,
      'E..<=.@.@...',
      `13:44:29.066382 eth0  Out IP ${OLD.ip}.80 > ${CLIENT}.47814: Flags [P.], seq 1:80, ack 1, length 79`,
      'E...P..HTTP/1.1 200 OK',
      `{"namespace":"demo","name":"web-0","uid":"${OLD.uid}"}`,
      '',
    ].join('\n');
    expect(parseTcpdumpAscii(text)).toEqual([
      { src: CLIENT, dst: OLD.ip, uids: [] },
      { src: OLD.ip, dst: CLIENT, uids: [OLD.uid] },
    ]);
  });
});

describe('checkFile', () => {
  it('finds nothing foreign in packets of the instance and its client', () => {
    const check = checkFile(
      [
        { src: CLIENT, dst: OLD.ip, uids: [] },
        { src: OLD.ip, dst: CLIENT, uids: [OLD.uid] },
      ],
      OLD,
      [CLIENT],
    );
    expect(check).toEqual({ packets: 2, ips: [CLIENT, OLD.ip].sort(), answeredBy: { [OLD.uid]: 1 }, foreign: 0 });
  });

  it('counts an answer of the next instance at the same IP as foreign', () => {
    const check = checkFile([{ src: OLD.ip, dst: CLIENT, uids: [NEW.uid] }], OLD, [CLIENT]);
    expect(check.foreign).toBe(1);
    expect(check.answeredBy).toEqual({ [NEW.uid]: 1 });
  });

  it('counts a packet of an address that is neither the pod nor a traffic source as foreign', () => {
    expect(checkFile([{ src: '10.244.1.3', dst: CLIENT, uids: [] }], OLD, [CLIENT]).foreign).toBe(1);
    expect(checkFile([{ src: OLD.ip, dst: '10.244.1.3', uids: [] }], OLD, [CLIENT]).foreign).toBe(1);
    expect(checkFile([{ src: '10.244.1.3', dst: '224.0.0.22', uids: [] }], OLD, [CLIENT]).foreign).toBe(1);
  });

  it("takes the pod netns's own link control (IGMP and MLD reports as its interface comes up) for the pod's", () => {
    const own = [
      { src: '0.0.0.0', dst: '224.0.0.22', uids: [] },
      { src: '::', dst: 'ff02::16', uids: [] },
    ];
    expect(checkFile(own, OLD, [CLIENT]).foreign).toBe(0);
  });
});

describe('summary', () => {
  const report = (instance: typeof OLD, foreign: number): InstanceReport => ({
    ...instance,
    files: [{ sessionId: 's', path: `/out/${instance.uid}/s/capture.pcap`, bytes: 100, packets: 5, ips: [CLIENT, instance.ip], answeredBy: { [instance.uid]: 1 }, foreign }],
  });

  it('ends with the OK verdict when no file holds another instance', () => {
    const text = summary([report(OLD, 0), report(NEW, 0)], 0, true);
    expect(text.split('\n').at(-1)).toBe('no foreign packets: OK');
    expect(text).toContain('only the pod UID tells their packets apart');
  });

  it('ends with FAIL and the count when one does', () => {
    expect(summary([report(OLD, 2), report(NEW, 0)], 2, false).split('\n').at(-1)).toBe('foreign packets: FAIL (2 packets of another instance)');
  });

  it('fails when there was no file to check', () => {
    expect(summary([], 0, false).split('\n').at(-1)).toBe('no capture files to check: FAIL');
  });
});
