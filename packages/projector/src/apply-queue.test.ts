import { describe, expect, it } from 'vitest';
import { createApplyQueue } from './apply-queue.js';

/** A unit of work that finishes when told to, recording when it ran. */
function gate(log: string[], name: string) {
  let finish = (): void => undefined;
  const done = new Promise<void>((resolve) => (finish = resolve));
  return {
    work: async () => {
      log.push(`start ${name}`);
      await done;
      log.push(`end ${name}`);
    },
    finish,
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));
const nothing = () => Promise.resolve();
const records = (count: number) => ({ records: count, bytes: 0 });

describe('apply queue', () => {
  it('keeps a partition in order, runs partitions side by side up to the concurrency', async () => {
    const log: string[] = [];
    const queue = createApplyQueue({ limits: { records: 100, bytes: Infinity }, concurrency: 2 });
    const a1 = gate(log, 'a1');
    const a2 = gate(log, 'a2');
    const b1 = gate(log, 'b1');
    const c1 = gate(log, 'c1');
    await queue.push(['a'], records(1), a1.work, nothing);
    await queue.push(['a'], records(1), a2.work, nothing);
    await queue.push(['b'], records(1), b1.work, nothing);
    await queue.push(['c'], records(1), c1.work, nothing);
    await tick();
    expect(log).toEqual(['start a1', 'start b1']);
    b1.finish();
    await tick();
    expect(log).toEqual(['start a1', 'start b1', 'end b1', 'start c1']);
    a1.finish();
    c1.finish();
    await tick();
    a2.finish();
    await queue.close();
    expect(log.indexOf('start a2')).toBeGreaterThan(log.indexOf('end a1'));
    expect(log.at(-1)).toBe('end a2');
  });

  it('makes a push wait while the limit is in hand, and takes nothing once closed', async () => {
    const log: string[] = [];
    const queue = createApplyQueue({ limits: { records: 10, bytes: Infinity }, concurrency: 1 });
    const first = gate(log, 'first');
    await queue.push(['a'], records(8), first.work, nothing);
    let pushed = false;
    const second = queue
      .push(['b'], records(5), () => Promise.resolve(), nothing)
      .then(() => (pushed = true));
    await tick();
    expect(pushed).toBe(false);
    first.finish();
    await second;
    expect(pushed).toBe(true);
    const closing = queue.close();
    let ran = false;
    await queue.push(
      ['c'],
      records(1),
      () => Promise.resolve().then(() => void (ran = true)),
      nothing,
    );
    await closing;
    expect(ran).toBe(false);
  });

  it('takes waiting pushes in order: a small one does not pass a large one', async () => {
    const log: string[] = [];
    const queue = createApplyQueue({ limits: { records: 10, bytes: Infinity }, concurrency: 2 });
    const first = gate(log, 'first');
    await queue.push(['a'], records(8), first.work, nothing);
    const taken: string[] = [];
    const large = queue
      .push(['b'], records(5), () => Promise.resolve(), nothing)
      .then(() => taken.push('large'));
    const small = queue
      .push(['c'], records(1), () => Promise.resolve(), nothing)
      .then(() => taken.push('small'));
    await tick();
    expect(taken).toEqual([]);
    first.finish();
    await Promise.all([large, small]);
    expect(taken).toEqual(['large', 'small']);
    await queue.close();
  });

  it('makes a push wait while the bytes limit is in hand, but takes a larger batch alone', async () => {
    const log: string[] = [];
    const queue = createApplyQueue({ limits: { records: 100, bytes: 1000 }, concurrency: 1 });
    const huge = gate(log, 'huge');
    await queue.push(['a'], { records: 1, bytes: 5000 }, huge.work, nothing);
    let pushed = false;
    const next = queue
      .push(['b'], { records: 1, bytes: 1 }, () => Promise.resolve(), nothing)
      .then(() => (pushed = true));
    await tick();
    expect(pushed).toBe(false);
    huge.finish();
    await next;
    expect(pushed).toBe(true);
    await queue.close();
  });

  it('runs a batch of several partitions after the earlier batches of each', async () => {
    const log: string[] = [];
    const queue = createApplyQueue({ limits: { records: 100, bytes: Infinity }, concurrency: 4 });
    const a1 = gate(log, 'a1');
    const b1 = gate(log, 'b1');
    const ab = gate(log, 'ab');
    const c1 = gate(log, 'c1');
    await queue.push(['a'], records(1), a1.work, nothing);
    await queue.push(['b'], records(1), b1.work, nothing);
    await queue.push(['a', 'b'], records(2), ab.work, nothing);
    await queue.push(['c'], records(1), c1.work, nothing);
    await tick();
    expect(log).toEqual(['start a1', 'start b1', 'start c1']);
    a1.finish();
    await tick();
    expect(log).not.toContain('start ab');
    b1.finish();
    await tick();
    expect(log.at(-1)).toBe('start ab');
    let applied = false;
    const waiting = queue.applied('b').then(() => (applied = true));
    await tick();
    expect(applied).toBe(false);
    ab.finish();
    c1.finish();
    await waiting;
    await queue.close();
  });

  it('tells when a partition has applied everything queued so far', async () => {
    const log: string[] = [];
    const queue = createApplyQueue({ limits: { records: 100, bytes: Infinity }, concurrency: 2 });
    const first = gate(log, 'a1');
    await queue.push(['a'], records(1), first.work, nothing);
    let applied = false;
    const waiting = queue.applied('a').then(() => (applied = true));
    await tick();
    expect(applied).toBe(false);
    first.finish();
    await waiting;
    expect(log).toEqual(['start a1', 'end a1']);
    await queue.applied('b');
  });
});
