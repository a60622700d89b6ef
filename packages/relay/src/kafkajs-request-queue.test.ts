// The patched kafkajs request queue (patches/kafkajs@2.2.4.patch) against kafkajs 2.2.4's own.
// The original: the installed file with the patch's hunk reversed, proven by the git blob hash the
// patch records for it. Both send every request at the same moments, whatever the order of
// pushes, responses, throttling and time; only the original keeps a timer spinning on an idle
// connection (kafkajs#1556), which is what the patch removes.
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
  destroy(): void;
}
type QueueClass = new (options: Record<string, unknown>) => Queue;

/** The patch's hunks for `FILE`: each as the text before and after. */
function hunks(): { before: string; after: string; blobBefore: string; blobAfter: string } {
  const patch = readFileSync(patchFile, 'utf8');
  const section = patch.split(/^(?=diff --git )/m).find((part) => part.includes(`a/${FILE} `));
  if (section === undefined) throw new Error(`the patch does not change ${FILE}`);
  const [, blobBefore = '', blobAfter = ''] =
    /^index ([0-9a-f]+)\.\.([0-9a-f]+)/m.exec(section) ?? [];
  const lines = section.split('\n').slice(section.split('\n').findIndex((l) => l.startsWith('@@')));
  const side = (drop: string) =>
    lines
      .filter((line) => !line.startsWith('@@') && !line.startsWith(drop) && line !== '')
      .map((line) => line.slice(1))
      .join('\n');
  return { before: side('+'), after: side('-'), blobBefore, blobAfter };
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
const originalSource = patchedSource.replace(change.after, change.before);
const Patched = compile(patchedSource);
const Original = compile(originalSource);

const START = 1_700_000_000_000;
const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** A queue whose sends are recorded as [time, correlation id]. */
function queueOf(Queue: QueueClass, maxInFlightRequests: number) {
  const sent: [number, number][] = [];
  const queue = new Queue({
    maxInFlightRequests,
    requestTimeout: 30_000,
    enforceRequestTimeout: false,
    clientId: 'test',
    broker: 'test:9092',
    logger: silent,
  });
  const push = (correlationId: number) =>
    queue.push({
      entry: { correlationId, resolve() {}, reject() {}, apiName: 'Fetch' },
      expectResponse: true,
      sendRequest: () => sent.push([Date.now(), correlationId]),
    });
  return { queue, sent, push };
}

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

  it('sends at the same moments as the original under any workload', () => {
    const step = fc.oneof(
      fc.record({ push: fc.constant(true) }),
      fc.record({ fulfill: fc.nat(20) }),
      fc.record({ throttle: fc.integer({ min: 0, max: 40 }) }),
      fc.record({ advance: fc.integer({ min: 0, max: 30 }) }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.array(step, { maxLength: 60 }),
        (max, steps) => {
          const run = (Queue: QueueClass) => {
            vi.setSystemTime(START);
            const { queue, sent, push } = queueOf(Queue, max);
            let next = 1;
            for (const s of steps) {
              if ('push' in s) push(next++);
              else if ('fulfill' in s)
                queue.fulfillRequest({
                  correlationId: s.fulfill,
                  payload: Buffer.alloc(0),
                  size: 0,
                });
              else if ('throttle' in s) queue.maybeThrottle(s.throttle);
              else vi.advanceTimersByTime(s.advance);
            }
            vi.advanceTimersByTime(100);
            queue.destroy();
            vi.clearAllTimers();
            return sent;
          };
          expect(run(Patched)).toEqual(run(Original));
        },
      ),
      { numRuns: 300 },
    );
  });
});
