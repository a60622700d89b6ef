// The patched kafkajs request queue (patches/kafkajs@2.2.4.patch) against kafkajs 2.2.4's own.
// The original: the installed file with the patch's hunk reversed, proven by the git blob hash the
// patch records for it. The patched queue sends every request at the earliest moment its turn,
// the in-flight limit and the broker's throttle allow (a reference model below); without
// throttling that is exactly when the original sends. The original keeps a timer spinning on an
// idle connection (kafkajs#1556), which the patch removes, and sends a request held by a throttle
// when that timer next fires, up to 10 ms after the throttle ends.
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileFunction } from 'node:vm';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const require = createRequire(import.meta.url);
const FILE = 'src/network/requestQueue/index.js';
const root = dirname(require.resolve('kafkajs/package.json'));
const path = join(root, FILE);
const patchFile = fileURLToPath(new URL('../../../patches/kafkajs@2.2.4.patch', import.meta.url));

interface Queue {
  push(request: {
    entry: { correlationId: number; resolve(): void; reject(): void; apiName: string };
    expectResponse: boolean;
    sendRequest(): void;
  }): void;
  fulfillRequest(response: { correlationId: number; payload: Buffer; size: number }): void;
  maybeThrottle(ms: number): void;
  scheduleRequestTimeoutCheck(): void;
  destroy(): void;
}
type QueueClass = new (options: Record<string, unknown>) => Queue;

/** The patch's hunks for `FILE`, each as the text before and after, and the file's blob hashes. */
function hunks(): {
  texts: { before: string; after: string }[];
  blobBefore: string;
  blobAfter: string;
} {
  const patch = readFileSync(patchFile, 'utf8');
  const section = patch.split(/^(?=diff --git )/m).find((part) => part.includes(`a/${FILE} `));
  if (section === undefined) throw new Error(`the patch does not change ${FILE}`);
  const [, blobBefore = '', blobAfter = ''] =
    /^index ([0-9a-f]+)\.\.([0-9a-f]+)/m.exec(section) ?? [];
  const texts = section
    .split(/^@@.*$/m)
    .slice(1)
    .map((hunk) => {
      const lines = hunk.split('\n').filter((line) => line !== '');
      const side = (drop: string) =>
        lines
          .filter((line) => !line.startsWith(drop))
          .map((line) => line.slice(1))
          .join('\n');
      return { before: side('+'), after: side('-') };
    });
  return { texts, blobBefore, blobAfter };
}

const gitBlobHash = (content: string) => {
  const bytes = Buffer.from(content);
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
};

function compile(source: string): QueueClass {
  const module = { exports: {} as QueueClass };
  const run = compileFunction(source, ['module', 'exports', 'require'], { filename: path }) as (
    module: object,
    exports: unknown,
    require: NodeJS.Require,
  ) => void;
  run(module, module.exports, createRequire(path));
  return module.exports;
}

const patchedSource = readFileSync(path, 'utf8');
const change = hunks();
const originalSource = change.texts.reduce(
  (source, { before, after }) => source.replace(after, before),
  patchedSource,
);
const Patched = compile(patchedSource);
const Original = compile(originalSource);

const START = 1_700_000_000_000;
const silent = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * A queue whose sends and timeouts are recorded as [time, correlation id]. With `timeoutMs`,
 * request timeouts are enforced from the connection's start on, as a kafkajs connection does.
 */
function queueOf(Queue: QueueClass, maxInFlightRequests: number, timeoutMs?: number) {
  const sent: [number, number][] = [];
  const timedOut: [number, number][] = [];
  const queue = new Queue({
    maxInFlightRequests,
    requestTimeout: timeoutMs ?? 30_000,
    enforceRequestTimeout: timeoutMs !== undefined,
    clientId: 'test',
    broker: 'test:9092',
    logger: silent,
  });
  if (timeoutMs !== undefined) queue.scheduleRequestTimeoutCheck();
  const push = (correlationId: number) =>
    queue.push({
      entry: {
        correlationId,
        resolve() {},
        reject: () => timedOut.push([Date.now(), correlationId]),
        apiName: 'Fetch',
      },
      expectResponse: true,
      sendRequest: () => sent.push([Date.now(), correlationId]),
    });
  return { queue, sent, timedOut, push };
}

type Step = { push: true } | { fulfill: number } | { throttle: number } | { advance: number };

/** In-flight limits and steps: pushes, responses, throttles, time passing (≤ `maxAdvanceMs`). */
const workload = (maxAdvanceMs: number) =>
  fc.tuple(
    fc.integer({ min: 1, max: 4 }),
    fc.array(
      fc.oneof(
        fc.record({ push: fc.constant(true as const) }),
        fc.record({ fulfill: fc.nat(20) }),
        fc.record({ throttle: fc.integer({ min: 0, max: 40 }) }),
        fc.record({ advance: fc.integer({ min: 0, max: maxAdvanceMs }) }),
      ),
      { maxLength: 60 },
    ),
  );

/** Plays `steps` on a queue, telling `answering` each response first; returns the pushes. */
function play(
  { queue, push }: ReturnType<typeof queueOf>,
  steps: readonly Step[],
  answering: (id: number) => void = () => undefined,
): number {
  let pushed = 0;
  for (const s of steps) {
    if ('push' in s) push((pushed += 1));
    else if ('fulfill' in s) {
      answering(s.fulfill);
      queue.fulfillRequest({ correlationId: s.fulfill, payload: Buffer.alloc(0), size: 0 });
    } else if ('throttle' in s) queue.maybeThrottle(s.throttle);
    else vi.advanceTimersByTime(s.advance);
  }
  return pushed;
}

/** The sends of `steps` played on a fresh queue, and of the 100 ms after them. */
function sendsOf(Queue: QueueClass, max: number, steps: readonly Step[]): [number, number][] {
  vi.setSystemTime(START);
  const q = queueOf(Queue, max);
  play(q, steps);
  vi.advanceTimersByTime(100);
  q.queue.destroy();
  vi.clearAllTimers();
  return q.sent;
}

/**
 * The reference: what a queue that wastes no time sends and when, as [time, id]. A request goes
 * when it is pushed, or as soon as it heads the queue with a free slot and no throttle in force.
 */
function earliestSends(max: number, steps: readonly Step[], tailMs: number): [number, number][] {
  let now = START;
  let throttledUntil = -1;
  let pushed = 0;
  const inFlight = new Set<number>();
  const pending: number[] = [];
  const sent: [number, number][] = [];
  const open = () => inFlight.size < max && throttledUntil <= now;
  const send = (id: number) => {
    inFlight.add(id);
    sent.push([now, id]);
  };
  const drain = () => {
    while (pending.length > 0 && open()) send(pending.shift() ?? NaN);
  };
  const pass = (ms: number) => {
    for (let i = 0; i < ms; i += 1) {
      now += 1;
      drain();
    }
  };
  for (const s of steps) {
    if ('push' in s) {
      pushed += 1;
      if (open()) send(pushed);
      else pending.push(pushed);
    } else if ('fulfill' in s) {
      inFlight.delete(s.fulfill);
      drain();
    } else if ('throttle' in s) {
      if (s.throttle > 0) throttledUntil = Math.max(throttledUntil, now + s.throttle);
    } else pass(s.advance);
  }
  pass(tailMs);
  return sent;
}

/** In-flight limit 1: a response, two pushes, a 1 ms throttle, then the first one's response. */
const LATE_AFTER_THROTTLE: [number, Step[]] = [
  1,
  [{ fulfill: 0 }, { push: true }, { push: true }, { throttle: 1 }, { fulfill: 1 }],
];

beforeEach(() => {
  vi.useFakeTimers({ now: START });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('the kafkajs request queue patch', () => {
  it('is compared with the 2.2.4 original, byte for byte', () => {
    expect(gitBlobHash(patchedSource)).toBe(change.blobAfter);
    expect(gitBlobHash(originalSource)).toBe(change.blobBefore);
    expect(originalSource).not.toBe(patchedSource);
  });

  it('leaves no timer behind on an idle connection; the original spins', () => {
    const timers = (Queue: QueueClass) => {
      const { queue, push } = queueOf(Queue, 5);
      push(1);
      queue.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
      const spy = vi.spyOn(globalThis, 'setTimeout');
      vi.advanceTimersByTime(1000);
      const scheduled = spy.mock.calls.length;
      spy.mockRestore();
      queue.destroy();
      return { scheduled, pending: vi.getTimerCount() };
    };
    const original = timers(Original);
    const patched = timers(Patched);
    expect(original.scheduled).toBeGreaterThan(500);
    expect(patched).toEqual({ scheduled: 0, pending: 0 });
  });

  it('sends what is queued behind a throttle when it ends, as the original', () => {
    const run = (Queue: QueueClass) => {
      vi.setSystemTime(START);
      const { queue, sent, push } = queueOf(Queue, 5);
      queue.maybeThrottle(50);
      push(1);
      push(2);
      vi.advanceTimersByTime(49);
      const early = sent.length;
      vi.advanceTimersByTime(30);
      queue.destroy();
      return { early, sent };
    };
    const patched = run(Patched);
    expect(patched).toEqual(run(Original));
    expect(patched.early).toBe(0);
    expect(patched.sent.map(([, id]) => id)).toEqual([1, 2]);
  });

  it('sends every request the moment its turn, the in-flight limit and throttling allow', () => {
    fc.assert(
      fc.property(workload(30), ([max, steps]) => {
        expect(sendsOf(Patched, max, steps)).toEqual(earliestSends(max, steps, 100));
      }),
      // The first example is a workload on which the patch once sent 9 ms late.
      { numRuns: 300, examples: [[LATE_AFTER_THROTTLE]] },
    );
  });

  it('sends at the same moments as the original when the broker does not throttle', () => {
    fc.assert(
      fc.property(workload(30), ([max, all]) => {
        const steps = all.filter((step) => !('throttle' in step));
        expect(sendsOf(Patched, max, steps)).toEqual(sendsOf(Original, max, steps));
      }),
      { numRuns: 300 },
    );
  });

  it('sends a request held by a throttle when it ends; the original, when its timer next fires', () => {
    // A throttle begun with a request waiting behind the in-flight limit, then the slot freed.
    const run = (Queue: QueueClass) => {
      vi.setSystemTime(START);
      const q = queueOf(Queue, 1);
      q.push(1);
      q.push(2);
      vi.advanceTimersByTime(2);
      q.queue.maybeThrottle(3);
      q.queue.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
      vi.advanceTimersByTime(100);
      q.queue.destroy();
      return q.sent.map(([at, id]) => [at - START, id]);
    };
    expect(run(Patched)).toEqual([
      [0, 1],
      [5, 2],
    ]);
    expect(run(Original)).toEqual([
      [0, 1],
      [10, 2],
    ]);
  });

  it('checks request timeouts only while requests are in flight; the original every 100 ms', () => {
    const wakes = (Queue: QueueClass) => {
      const { queue, push, timedOut } = queueOf(Queue, 5, 30_000);
      push(1);
      queue.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
      const spy = vi.spyOn(globalThis, 'setTimeout');
      const every = vi.spyOn(globalThis, 'setInterval');
      const before = vi.getTimerCount();
      vi.advanceTimersByTime(60_000);
      const after = vi.getTimerCount();
      const scheduled = spy.mock.calls.length + every.mock.calls.length;
      spy.mockRestore();
      every.mockRestore();
      queue.destroy();
      return { before, after, scheduled, timedOut: timedOut.length, left: vi.getTimerCount() };
    };
    // The original's interval stays, firing 600 times a minute (and its idle throttle check spins).
    expect(wakes(Original)).toMatchObject({ after: 2, timedOut: 0, left: 0 });
    // The patched one's check of the fulfilled request runs once, at its deadline, and ends.
    expect(wakes(Patched)).toEqual({ before: 1, after: 0, scheduled: 0, timedOut: 0, left: 0 });
  });

  it('times out every request the original does, no later, and none before its time', () => {
    const TIMEOUT_MS = 250;
    fc.assert(
      fc.property(workload(400), ([max, steps]) => {
        const run = (Queue: QueueClass) => {
          vi.setSystemTime(START);
          const q = queueOf(Queue, max, TIMEOUT_MS);
          const { sent, timedOut } = q;
          const fulfilled = new Map<number, number>();
          // An answer counts for a request in flight: sent, not yet answered or timed out.
          const inFlight = (id: number) =>
            sent.some(([, i]) => i === id) && !timedOut.some(([, i]) => i === id);
          const pushed = play(q, steps, (id) => {
            if (!fulfilled.has(id) && inFlight(id)) fulfilled.set(id, Date.now());
          });
          vi.advanceTimersByTime(TIMEOUT_MS * 2 * (pushed + 1));
          q.queue.destroy();
          const left = vi.getTimerCount();
          vi.clearAllTimers();
          return { sent: new Map(sent.map(([at, id]) => [id, at])), timedOut, fulfilled, left };
        };
        const original = run(Original);
        const patched = run(Patched);
        expect(patched.left).toBe(0);
        const patchedAt = new Map(patched.timedOut.map(([at, id]) => [id, at]));
        for (const [at, id] of patched.timedOut) {
          // Exactly when more than the timeout has passed since it was sent, unanswered.
          expect(at).toBe((patched.sent.get(id) ?? NaN) + TIMEOUT_MS + 1);
          expect((patched.fulfilled.get(id) ?? Infinity) >= at).toBe(true);
        }
        for (const [id, sentAt] of patched.sent) {
          const answered = patched.fulfilled.get(id);
          if (answered === undefined || answered > sentAt + TIMEOUT_MS)
            expect(patchedAt.has(id)).toBe(true);
        }
        // With the same sends so far, what the original timed out the patched one did first.
        for (const [at, id] of original.timedOut) {
          if (original.sent.get(id) !== patched.sent.get(id)) continue;
          expect(patchedAt.get(id) ?? Infinity).toBeLessThanOrEqual(at);
        }
      }),
      { numRuns: 300 },
    );
  });
});
