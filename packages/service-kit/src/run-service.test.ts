import { SluiceError } from '@sluice/errors';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ExitCode, runService, type Service, type ServiceOptions } from './run-service.js';

let lines: Record<string, unknown>[];
let exits: number[];
let signalHandlers: { SIGTERM: NodeJS.SignalsListener[]; SIGINT: NodeJS.SignalsListener[] };
let services: Service[];
/** Lets a stop that hangs finish, once a test is done with it. */
let releaseHungStops: () => void;
let hungStops: Promise<void>;

const logger = () =>
  pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    }),
  );

beforeEach(() => {
  lines = [];
  exits = [];
  services = [];
  hungStops = new Promise((done) => (releaseHungStops = done));
  signalHandlers = { SIGTERM: process.listeners('SIGTERM'), SIGINT: process.listeners('SIGINT') };
  vi.spyOn(process, 'exit').mockImplementation((code) => {
    exits.push(Number(code));
    return undefined as never;
  });
});

afterEach(async () => {
  // Every service stops (and closes its HTTP server) before the next test.
  await Promise.all(services.map((service) => service.shutdown('test')));
  vi.restoreAllMocks();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    for (const listener of process.listeners(signal)) {
      if (!signalHandlers[signal].includes(listener)) process.off(signal, listener);
    }
  }
});

async function start(overrides: Partial<ServiceOptions> = {}): Promise<Service> {
  const service = await runService({
    logger: logger(),
    port: 0,
    host: '127.0.0.1',
    metrics: new Registry(),
    readiness: ({ stopping }) => ({
      ready: !stopping,
      body: { status: stopping ? 'stopping' : 'ready' },
    }),
    stopDescription: 'finishing the work in hand',
    stop: () => Promise.resolve(),
    stopTimeoutMs: 30_000,
    ...overrides,
  });
  services.push(service);
  return service;
}

/** The handler this test's service added for `signal`. */
function handlerFor(signal: 'SIGTERM' | 'SIGINT'): () => void {
  const added = process.listeners(signal).filter((l) => !signalHandlers[signal].includes(l));
  expect(added).toHaveLength(1);
  return () => added[0]?.(signal);
}

const messages = () => lines.map((line) => line.msg);

describe('runService', () => {
  it('serves health, readiness, metrics and the routes it is given', async () => {
    const service = await start({
      routes: (app) => app.get('/extra', (_request, reply) => reply.code(202).send({ extra: 1 })),
    });
    const get = (path: string) => fetch(`${service.address}${path}`);
    expect(await (await get('/healthz')).json()).toEqual({ status: 'ok' });
    const ready = await get('/readyz');
    expect([ready.status, await ready.json()]).toEqual([200, { status: 'ready' }]);
    const metrics = await get('/metrics');
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    const extra = await get('/extra');
    expect([extra.status, await extra.json()]).toEqual([202, { extra: 1 }]);
  });

  it('stops on SIGTERM: readiness fails, then stop, HTTP server, close, exit 0', async () => {
    const order: string[] = [];
    let release: () => void = () => undefined;
    const stopping = new Promise<void>((done) => (release = done));
    const service = await start({
      stop: async () => {
        order.push('stop');
        await stopping;
      },
      close: () => {
        order.push('close');
        return Promise.resolve();
      },
    });
    handlerFor('SIGTERM')();
    expect(service.stopping()).toBe(true);
    const ready = await fetch(`${service.address}/readyz`);
    expect([ready.status, await ready.json()]).toEqual([503, { status: 'stopping' }]);
    release();
    await service.shutdown('again');
    expect(exits).toEqual([ExitCode.ok]);
    expect(order).toEqual(['stop', 'close']);
    await expect(fetch(`${service.address}/healthz`)).rejects.toThrow();
    expect(lines.find((line) => line.msg === 'stopping: finishing the work in hand')).toMatchObject(
      { level: 30, signal: 'SIGTERM' },
    );
    expect(messages().at(-1)).toBe('stopped');
  });

  it('stops once, with the first reason and exit code', async () => {
    const stop = vi.fn(() => Promise.resolve());
    const service = await start({ stop });
    const first = service.shutdown('consumer_stopped', ExitCode.consumerStopped);
    handlerFor('SIGINT')();
    await first;
    expect(stop).toHaveBeenCalledTimes(1);
    expect(exits).toEqual([ExitCode.consumerStopped]);
  });

  it('exits with a failure after a step that failed, having logged it', async () => {
    const service = await start({ stop: () => Promise.reject(new Error('stuck consumer')) });
    await service.shutdown('SIGTERM');
    expect(exits).toEqual([ExitCode.failure]);
    expect(lines.find((line) => line.msg === 'stop failed')).toMatchObject({
      level: 50,
      err: { message: 'stuck consumer' },
    });
  });

  it('exits once the stop timeout passes, as a failure or with the code it stopped for', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      const service = await start({ stop: () => hungStops, stopTimeoutMs: 50 });
      void service.shutdown('consumer_stopped', ExitCode.consumerStopped);
      await vi.advanceTimersByTimeAsync(50);
      expect(exits).toEqual([ExitCode.consumerStopped]);
      expect(lines.find((line) => line.msg === 'graceful stop timed out')).toMatchObject({
        level: 50,
        stopTimeoutMs: 50,
      });
      const other = await start({ stop: () => hungStops, stopTimeoutMs: 50 });
      void other.shutdown('SIGTERM');
      await vi.advanceTimersByTimeAsync(50);
      expect(exits).toEqual([ExitCode.consumerStopped, ExitCode.failure]);
    } finally {
      vi.useRealTimers();
      releaseHungStops();
    }
  });

  it('fails at once at fatal level, naming the error code', async () => {
    const service = await start();
    service.fail(new SluiceError('slot_lost', 'The slot is lost'), ExitCode.needsOperator);
    expect(exits).toEqual([ExitCode.needsOperator]);
    expect(lines.at(-1)).toMatchObject({ level: 60, code: 'slot_lost', msg: 'The slot is lost' });
  });
});

describe('runService embedded in a process it does not own', () => {
  it('installs no signal handler, never exits, and resolves a stop with its exit code', async () => {
    const before = process.listenerCount('SIGTERM') + process.listenerCount('SIGINT');
    const service = await start({ ownsProcess: false });
    expect(process.listenerCount('SIGTERM') + process.listenerCount('SIGINT')).toBe(before);
    expect(await service.shutdown('consumer_stopped', ExitCode.consumerStopped)).toBe(
      ExitCode.consumerStopped,
    );
    expect(await service.shutdown('again')).toBe(ExitCode.consumerStopped);
    expect(await service.stopped).toBe(ExitCode.consumerStopped);
    await expect(fetch(`${service.address}/healthz`)).rejects.toThrow();
    const failing = await start({
      ownsProcess: false,
      stop: () => Promise.reject(new Error('stuck consumer')),
    });
    expect(await failing.shutdown('stop')).toBe(ExitCode.failure);
    expect(exits).toEqual([]);
  });

  it('resolves a stop that times out as a failure, and throws on fail after starting a stop', async () => {
    const hung = await start({ ownsProcess: false, stop: () => hungStops, stopTimeoutMs: 50 });
    expect(await hung.shutdown('stop')).toBe(ExitCode.failure);
    expect(lines.some((line) => line.msg === 'graceful stop timed out')).toBe(true);
    releaseHungStops();
    const service = await start({ ownsProcess: false });
    const lost = new SluiceError('slot_lost', 'The slot is lost');
    expect(() => service.fail(lost, ExitCode.needsOperator)).toThrow(lost);
    expect(service.stopping()).toBe(true);
    expect(await service.shutdown('again')).toBe(ExitCode.needsOperator);
    expect(exits).toEqual([]);
  });
});

describe('readiness that does not answer, or fails', () => {
  const readyz = async (service: Service) => {
    const started = Date.now();
    const res = await fetch(`${service.address}/readyz`);
    return { status: res.status, body: await res.json(), ms: Date.now() - started };
  };

  it('answers 503 once the check has run past its timeout, and probes share one check', async () => {
    let checks = 0;
    let answer: (readiness: { ready: boolean; body: unknown }) => void = () => undefined;
    let hang = true;
    const service = await start({
      readinessTimeoutMs: 200,
      readiness: () => {
        checks += 1;
        if (!hang) return { ready: true, body: { status: 'ready' } };
        return new Promise((resolve) => (answer = resolve));
      },
    });
    const probes = await Promise.all([readyz(service), readyz(service), readyz(service)]);
    for (const probe of probes) {
      expect(probe.status).toBe(503);
      expect(probe.body).toEqual({
        status: 'not_ready',
        problems: [
          {
            code: 'readiness_timeout',
            detail: 'The readiness check did not answer within 200 ms',
          },
        ],
      });
      expect(probe.ms).toBeGreaterThanOrEqual(190);
      expect(probe.ms).toBeLessThan(2000);
    }
    expect(checks).toBe(1);
    // A check older than the timeout is shared no more: one that hangs for good (a connection
    // that will never answer) must not hold readiness down once a new check would answer.
    expect((await readyz(service)).status).toBe(503);
    expect(checks).toBe(2);
    expect(
      lines.filter((line) => line.msg === 'readiness check did not answer in time'),
    ).toHaveLength(4);
    hang = false;
    await expect.poll(async () => (await readyz(service)).status).toBe(200);
    expect(checks).toBe(3);
    answer({ ready: true, body: { status: 'ready' } });
  });

  it('does not share a check begun before a stop with probes after it', async () => {
    let answer: (readiness: { ready: boolean; body: unknown }) => void = () => undefined;
    const seen: boolean[] = [];
    const service = await start({
      readiness: ({ stopping }) => {
        seen.push(stopping);
        if (stopping) return { ready: false, body: { status: 'stopping' } };
        return new Promise((resolve) => (answer = resolve));
      },
      stop: () => hungStops, // the stop stays in progress
    });
    const before = readyz(service);
    await expect.poll(() => seen.length).toBe(1);
    void service.shutdown('test');
    const after = await readyz(service);
    expect([after.status, after.body]).toEqual([503, { status: 'stopping' }]);
    answer({ ready: true, body: { status: 'ready' } });
    expect((await before).status).toBe(200);
    expect(seen).toEqual([false, true]);
    releaseHungStops();
  });

  it('answers the service own 503 when it gives one, for a timeout and for a failure', async () => {
    let fail = false;
    const service = await start({
      readinessTimeoutMs: 100,
      readiness: () =>
        fail
          ? Promise.reject(
              Object.assign(new Error('connect ECONNREFUSED'), {
                code: 'ECONNREFUSED',
                syscall: 'connect',
              }),
            )
          : new Promise((resolve) =>
              setTimeout(() => resolve({ ready: true, body: { late: true } }), 300),
            ),
      notReady: (problem) => ({
        ready: false,
        body: { type: 'about:blank', code: problem.code },
        contentType: 'application/problem+json',
      }),
    });
    const res = await fetch(`${service.address}/readyz`);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect([res.status, await res.json()]).toEqual([
      503,
      { type: 'about:blank', code: 'readiness_timeout' },
    ]);
    fail = true;
    await expect
      .poll(async () => (await readyz(service)).body)
      .toEqual({ type: 'about:blank', code: 'database_unavailable' });
  });

  it('answers 503 readiness_failed for a check that throws, and logs why', async () => {
    const service = await start({
      readiness: () => {
        throw new Error('the consumer map is broken');
      },
    });
    const probe = await readyz(service);
    expect([probe.status, probe.body]).toEqual([
      503,
      {
        status: 'not_ready',
        problems: [
          {
            code: 'readiness_failed',
            detail: 'The readiness check failed: the consumer map is broken',
          },
        ],
      },
    ]);
    expect(lines.find((line) => line.msg === 'readiness check failed')).toMatchObject({
      level: 40,
    });
  });
});
