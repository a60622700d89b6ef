// The relay's acknowledgement rules, with a scripted replication source and a controllable sink.
import type { SerializedEvent } from '@sluice/contracts';
import { performance } from 'node:perf_hooks';
import { waitFor } from '@sluice/testkit';
import { describe, expect, it } from 'vitest';
import type { EventSink, OutgoingEvent } from './event-sink.js';
import { Lsn } from './lsn.js';
import { outboxRowToEvent } from '@sluice/outbox/rows';
import { createRelay, type RelayHooks } from './relay.js';
import type { ReplicationEvent, ReplicationSource } from './replication-source.js';

/** A source whose events the test pushes, recording acknowledgements and pauses. */
function scriptedSource() {
  let handler: ((event: ReplicationEvent) => void) | undefined;
  let finish: ((error?: Error) => void) | undefined;
  const acks: Lsn[] = [];
  const ackedAt: number[] = [];
  const state = { paused: false, stopped: false };
  const source: ReplicationSource = {
    start(h) {
      handler = h;
      return new Promise<void>((resolve, reject) => {
        finish = (error) => (error === undefined ? resolve() : reject(error));
      });
    },
    acknowledge: (lsn) => {
      acks.push(lsn);
      ackedAt.push(performance.now());
    },
    pause: () => (state.paused = true),
    resume: () => (state.paused = false),
    stop: () => {
      state.stopped = true;
      finish?.();
      return Promise.resolve();
    },
  };
  const push = (event: ReplicationEvent) => handler?.(event);
  const transaction = (commit: number, end: number, ids: string[]) => {
    push({ kind: 'begin', commitLsn: Lsn.of(commit), commitTime: new Date() });
    for (const id of ids) push({ kind: 'insert', schema: 'shop', table: 'outbox', row: row(id) });
    push({ kind: 'insert', schema: 'shop', table: 'other', row: row('ignored') });
    push({ kind: 'commit', commitLsn: Lsn.of(commit), endLsn: Lsn.of(end) });
  };
  return {
    source,
    push,
    transaction,
    acks,
    ackedAt,
    state,
    fail: (error: Error) => finish?.(error),
    started: () => handler !== undefined,
  };
}

function row(id: string, payload = JSON.stringify({ cartId: id })) {
  return {
    id,
    aggregate_type: 'cart',
    aggregate_id: `agg-${id}`,
    aggregate_version: '1',
    type: 'cart.opened.v1',
    payload,
    metadata: '{}',
    occurred_at: '1970-01-01 00:00:00+00',
  };
}

/** A sink whose sends complete only when the test says so (or their signal aborts). */
function gatedSink() {
  const sent: SerializedEvent[][] = [];
  const gates: (() => void)[] = [];
  const signals: (AbortSignal | undefined)[] = [];
  const sink: EventSink = {
    publish(events: readonly OutgoingEvent[], signal?: AbortSignal) {
      sent.push(events.map((e) => e.event));
      signals.push(signal);
      return new Promise<void>((resolve, reject) => {
        gates.push(resolve);
        signal?.addEventListener('abort', () => reject(new Error('publish aborted')));
      });
    },
    close: () => Promise.resolve(),
  };
  return {
    sink,
    sent,
    signals,
    release: () => gates.shift()?.(),
    pending: () => gates.length,
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !condition(); i += 1) await tick();
  expect(condition()).toBe(true);
}

function setup(
  options: {
    maxBatchEvents?: number;
    maxBufferedEvents?: number;
    maxBufferedBytes?: number;
    stopTimeoutMs?: number;
    statusGapMs?: number;
    hooks?: RelayHooks;
  } = {},
) {
  const script = scriptedSource();
  const gate = gatedSink();
  const relay = createRelay({
    source: () => script.source,
    sink: gate.sink,
    outbox: { schema: 'shop', table: 'outbox' },
    statusIntervalMs: 60_000,
    // The rules of what is acknowledged, each told at once; the gap has a test of its own.
    statusGapMs: 0,
    ...options,
  });
  const running = relay.run();
  return { script, gate, relay, running };
}

describe('relay acknowledgements', () => {
  it('acknowledges a transaction’s end only after Kafka acknowledged all of its events', async () => {
    const { script, gate, relay } = setup();
    await until(script.started);
    script.transaction(100, 110, ['a', 'b']);
    await until(() => gate.pending() === 1);
    expect(gate.sent[0]?.map((e) => e.id)).toEqual(['a', 'b']);
    expect(script.acks).toEqual([]);
    gate.release();
    await until(() => script.acks.length === 1);
    expect(script.acks).toEqual([Lsn.of(110)]);
    expect(relay.acknowledged()).toBe(Lsn.of(110));
    const stopping = relay.stop();
    await stopping;
  });

  it('batches transactions read while a send is in flight, and acknowledges the last one', async () => {
    const { script, gate, relay } = setup();
    await until(script.started);
    script.transaction(100, 110, ['a']);
    await until(() => gate.pending() === 1);
    script.transaction(120, 130, ['b']);
    script.transaction(140, 150, ['c', 'd']);
    gate.release();
    await until(() => gate.pending() === 1);
    expect(gate.sent[1]?.map((e) => e.id)).toEqual(['b', 'c', 'd']);
    expect(script.acks).toEqual([Lsn.of(110)]);
    gate.release();
    await until(() => script.acks.length === 2);
    expect(script.acks[1]).toBe(Lsn.of(150));
    await relay.stop();
  });

  it('acknowledges keepalive positions only while nothing is open or in flight', async () => {
    const { script, gate, relay } = setup();
    await until(script.started);
    script.push({ kind: 'keepalive', walEnd: Lsn.of(50), replyRequested: false });
    expect(script.acks).toEqual([Lsn.of(50)]);
    script.transaction(100, 110, ['a']);
    await until(() => gate.pending() === 1);
    script.push({ kind: 'keepalive', walEnd: Lsn.of(200), replyRequested: true });
    expect(script.acks.at(-1)).toBe(Lsn.of(50)); // in flight: answered with the durable position
    gate.release();
    await until(() => relay.acknowledged() === Lsn.of(110));
    script.push({ kind: 'begin', commitLsn: Lsn.of(300), commitTime: new Date() });
    script.push({ kind: 'keepalive', walEnd: Lsn.of(310), replyRequested: false });
    expect(relay.acknowledged()).toBe(Lsn.of(110)); // a transaction is open
    script.push({ kind: 'commit', commitLsn: Lsn.of(300), endLsn: Lsn.of(320) });
    expect(relay.acknowledged()).toBe(Lsn.of(320)); // an empty transaction, nothing in flight
    await relay.stop();
  });

  it('splits a transaction larger than a batch and acknowledges it after the last part', async () => {
    const { script, gate, relay } = setup({ maxBatchEvents: 2 });
    await until(script.started);
    script.transaction(100, 110, ['a', 'b', 'c', 'd', 'e']);
    for (const expected of [['a', 'b'], ['c', 'd'], ['e']]) {
      await until(() => gate.pending() === 1);
      expect(gate.sent.at(-1)?.map((e) => e.id)).toEqual(expected);
      expect(script.acks).toEqual([]);
      gate.release();
    }
    await until(() => script.acks.length === 1);
    expect(script.acks).toEqual([Lsn.of(110)]);
    await relay.stop();
  });

  it('publishes a transaction’s events before its commit is read, and acknowledges after it', async () => {
    const { script, gate, relay } = setup();
    await until(script.started);
    script.push({ kind: 'begin', commitLsn: Lsn.of(100), commitTime: new Date() });
    script.push({ kind: 'insert', schema: 'shop', table: 'outbox', row: row('a') });
    await until(() => gate.pending() === 1);
    gate.release();
    await until(() => relay.oldestUnpublished() !== undefined && gate.pending() === 0);
    expect(script.acks).toEqual([]);
    script.push({ kind: 'commit', commitLsn: Lsn.of(100), endLsn: Lsn.of(110) });
    expect(script.acks).toEqual([Lsn.of(110)]);
    expect(relay.oldestUnpublished()).toBeUndefined();
    await relay.stop();
  });

  it('pauses reading while too many events wait, and resumes once they drained', async () => {
    const { script, gate, relay } = setup({ maxBufferedEvents: 3 });
    await until(script.started);
    script.transaction(100, 110, ['a']);
    await until(() => gate.pending() === 1);
    script.transaction(120, 130, ['b', 'c', 'd']);
    expect(script.state.paused).toBe(true);
    gate.release();
    await until(() => gate.pending() === 1);
    gate.release();
    await until(() => !script.state.paused);
    await relay.stop();
  });

  it('pauses reading while the events waiting hold too many bytes, however few they are', async () => {
    const { script, gate, relay } = setup();
    await until(script.started);
    script.transaction(100, 110, ['a']);
    await until(() => gate.pending() === 1);
    const large = JSON.stringify({ body: 'x'.repeat(8 * 1024 * 1024) });
    script.push({ kind: 'begin', commitLsn: Lsn.of(120), commitTime: new Date() });
    for (let i = 0; i < 8 && !script.state.paused; i += 1)
      script.push({ kind: 'insert', schema: 'shop', table: 'outbox', row: row(`l${i}`, large) });
    script.push({ kind: 'commit', commitLsn: Lsn.of(120), endLsn: Lsn.of(130) });
    // 32 MiB by default: the fourth such event crosses it.
    expect(script.state.paused).toBe(true);
    expect(gate.sent.flat()).toHaveLength(1);
    while (script.state.paused) {
      gate.release();
      await until(() => gate.pending() === 1 || !script.state.paused);
    }
    await until(() => script.acks.includes(Lsn.of(130)));
    expect(gate.sent.flat().map((e) => e.id)).toEqual(['a', 'l0', 'l1', 'l2', 'l3']);
    await relay.stop();
  });

  it('resumes once nothing waits, whatever its limits', async () => {
    const { script, gate, relay } = setup({ maxBufferedEvents: 0, maxBufferedBytes: 0 });
    await until(script.started);
    script.transaction(100, 110, ['a', 'b']);
    expect(script.state.paused).toBe(true);
    await until(() => gate.pending() === 1);
    gate.release();
    await until(() => !script.state.paused);
    expect(script.acks).toEqual([Lsn.of(110)]);
    await relay.stop();
  });

  it('on stop, publishes and acknowledges what was read, and ignores what arrives after', async () => {
    const { script, gate, relay, running } = setup();
    await until(script.started);
    script.transaction(100, 110, ['a']);
    await until(() => gate.pending() === 1);
    const stopped = relay.stop();
    script.transaction(120, 130, ['late']);
    gate.release();
    await stopped;
    await running;
    expect(gate.sent.flat().map((e) => e.id)).toEqual(['a']);
    expect(relay.acknowledged()).toBe(Lsn.of(110));
    expect(script.state.stopped).toBe(true);
  });

  it('stopped inside a transaction, reads it to its commit and acknowledges it, then nothing more', async () => {
    const { script, gate, relay, running } = setup();
    await until(script.started);
    script.push({ kind: 'begin', commitLsn: Lsn.of(100), commitTime: new Date() });
    script.push({ kind: 'insert', schema: 'shop', table: 'outbox', row: row('a') });
    await until(() => gate.pending() === 1);
    const stopped = relay.stop();
    expect(script.state.paused).toBe(false);
    script.push({ kind: 'insert', schema: 'shop', table: 'outbox', row: row('b') });
    script.push({ kind: 'commit', commitLsn: Lsn.of(100), endLsn: Lsn.of(110) });
    script.transaction(120, 130, ['late']);
    gate.release();
    await until(() => gate.pending() === 1);
    gate.release();
    await stopped;
    await running;
    expect(gate.sent.flat().map((e) => e.id)).toEqual(['a', 'b']);
    expect(relay.acknowledged()).toBe(Lsn.of(110));
  });

  it('on stop, gives up a send Kafka never completes after stopTimeoutMs, acknowledging only what was published', async () => {
    const timedOut: number[] = [];
    const { script, gate, relay, running } = setup({
      maxBatchEvents: 1,
      stopTimeoutMs: 50,
      hooks: { stopTimedOut: (unpublished) => timedOut.push(unpublished) },
    });
    await until(script.started);
    script.transaction(100, 110, ['a']);
    script.transaction(120, 130, ['b', 'c']);
    await until(() => gate.pending() === 1);
    gate.release();
    await until(() => gate.pending() === 1); // 'b' is in flight, and Kafka never answers
    const stoppedAt = Date.now();
    await relay.stop();
    await running;
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(45);
    expect(gate.signals.every((signal) => signal?.aborted === true)).toBe(true);
    expect(gate.sent.flat().map((e) => e.id)).toEqual(['a', 'b']);
    expect(timedOut).toEqual([2]);
    expect(relay.acknowledged()).toBe(Lsn.of(110));
    expect(script.acks.every((lsn) => lsn <= Lsn.of(110))).toBe(true);
    expect(script.state.stopped).toBe(true);
  });

  it('on stop inside a transaction whose commit never comes, gives up after stopTimeoutMs', async () => {
    const timedOut: number[] = [];
    const { script, gate, relay, running } = setup({
      stopTimeoutMs: 50,
      hooks: { stopTimedOut: (unpublished) => timedOut.push(unpublished) },
    });
    await until(script.started);
    script.push({ kind: 'begin', commitLsn: Lsn.of(100), commitTime: new Date() });
    script.push({ kind: 'insert', schema: 'shop', table: 'outbox', row: row('a') });
    await until(() => gate.pending() === 1);
    gate.release();
    await until(() => gate.pending() === 0);
    await relay.stop();
    await running;
    expect(timedOut).toEqual([0]);
    expect(script.acks.every((lsn) => lsn === Lsn.zero)).toBe(true);
    expect(script.state.stopped).toBe(true);
  });

  it('after a stream failure, drops what was not published and never acknowledges past it', async () => {
    const first = scriptedSource();
    const second = scriptedSource();
    let made = 0;
    const gate = gatedSink();
    const failures: unknown[] = [];
    const relay = createRelay({
      source: () => ((made += 1) === 1 ? first : second).source,
      sink: gate.sink,
      outbox: { schema: 'shop', table: 'outbox' },
      reconnectDelayMs: 1,
      statusGapMs: 0,
      hooks: { streamFailed: (error) => failures.push(error) },
    });
    const running = relay.run();
    await until(first.started);
    first.transaction(100, 110, ['a']);
    await until(() => gate.pending() === 1);
    first.transaction(120, 130, ['b']);
    first.fail(new Error('PostgreSQL restarted'));
    gate.release(); // 'a' completes after the failure; 'b' must not be acknowledged
    await until(second.started);
    expect(failures).toHaveLength(1);
    expect(relay.acknowledged() <= Lsn.of(110)).toBe(true);
    second.transaction(120, 130, ['b']);
    await until(() => gate.pending() === 1);
    gate.release();
    await until(() => relay.acknowledged() === Lsn.of(130));
    await relay.stop();
    await running;
  });
});

describe('relay status updates', () => {
  it('tells PostgreSQL at most once per statusGapMs, the latest position', async () => {
    const { script, gate, relay } = setup({ statusGapMs: 1000 });
    await until(script.started);
    for (const [i, id] of ['a', 'b', 'c'].entries()) {
      script.transaction(100 + 20 * i, 110 + 20 * i, [id]);
      await until(() => gate.pending() === 1);
      gate.release();
    }
    await until(() => relay.acknowledged() === Lsn.of(150));
    expect(script.acks).toEqual([Lsn.of(110)]);
    // Real time: the gap runs on a timer.
    await waitFor(() => script.acks.length === 2, {
      timeoutMs: 5000,
      intervalMs: 2,
      message: 'the second status update',
    });
    expect(script.acks).toEqual([Lsn.of(110), Lsn.of(150)]);
    const [firstAt = 0, secondAt = 0] = script.ackedAt;
    expect(secondAt - firstAt).toBeGreaterThanOrEqual(990); // timers round to the millisecond
    await relay.stop();
  });

  it('answers a keepalive asking for a reply at once, a send in flight or not', async () => {
    const { script, gate, relay } = setup({ statusGapMs: 60_000 });
    await until(script.started);
    script.transaction(100, 110, ['a']);
    await until(() => gate.pending() === 1);
    gate.release();
    await until(() => script.acks.length === 1);
    script.transaction(120, 130, ['b']);
    await until(() => gate.pending() === 1);
    script.push({ kind: 'keepalive', walEnd: Lsn.of(140), replyRequested: true });
    expect(script.acks).toEqual([Lsn.of(110), Lsn.of(110)]);
    gate.release();
    await until(() => relay.acknowledged() === Lsn.of(130));
    script.push({ kind: 'keepalive', walEnd: Lsn.of(150), replyRequested: true });
    expect(script.acks).toEqual([Lsn.of(110), Lsn.of(110), Lsn.of(150)]);
    await relay.stop();
  });

  it('tells a standing stream the last position when a send fails', async () => {
    const script = scriptedSource();
    let sends = 0;
    const relay = createRelay({
      source: () => script.source,
      sink: {
        publish: () =>
          (sends += 1) < 3 ? Promise.resolve() : Promise.reject(new TypeError('a bug')),
        close: () => Promise.resolve(),
      },
      outbox: { schema: 'shop', table: 'outbox' },
      statusIntervalMs: 60_000,
      statusGapMs: 60_000,
      reconnectDelayMs: 60_000,
    });
    const running = relay.run();
    await until(script.started);
    script.transaction(100, 110, ['a']);
    await until(() => script.acks.length === 1);
    script.transaction(120, 130, ['b']);
    await until(() => relay.acknowledged() === Lsn.of(130));
    expect(script.acks).toEqual([Lsn.of(110)]);
    script.transaction(140, 150, ['c']);
    await until(() => script.state.stopped);
    expect(script.acks).toEqual([Lsn.of(110), Lsn.of(130)]);
    await relay.stop();
    await running;
  });
});

describe('outbox rows as events', () => {
  it('keeps the payload as its JSON text and turns UTC timestamps into RFC 3339', () => {
    const at = (occurred_at: string) => outboxRowToEvent({ ...row('1'), occurred_at }).occurredAt;
    expect(at('2026-11-24 03:47:56.123456+00')).toBe('2026-11-24T03:47:56.123Z');
    expect(at('2026-11-24 03:47:56.1+00')).toBe('2026-11-24T03:47:56.100Z');
    expect(at('2026-11-24 03:47:56+00')).toBe('2026-11-24T03:47:56.000Z');
    expect(at('2026-11-24 04:47:56.5+01')).toBe('2026-11-24T03:47:56.500Z');
    const event = outboxRowToEvent(row('7'));
    expect(event.payloadJson).toBe('{"cartId":"7"}');
    expect(event.aggregateVersion).toBe(1);
    expect(event.metadata).toEqual({});
  });
});
