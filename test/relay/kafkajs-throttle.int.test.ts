// A broker's quotas, for real. A client over its byte rate gets a throttle time back with each
// response (KIP-219), and kafkajs must hold the connection's next requests until the throttle ends,
// then send them at once. The patched request queue (patches/kafkajs@2.2.4.patch) under a producer
// quota and a consumer quota: every record acknowledged and read back in order, no request sent
// inside a throttle, none held past its end. (kafkajs-request-queue.test.ts compares the queue
// with the original on the same timings.)
import { DEFAULT_KAFKA_VERSION } from '@sluice/stack';
import { createTopics, testServers, uniqueName, waitFor } from '@sluice/testkit';
import { Kafka, logLevel, type Producer, type RequestEvent } from 'kafkajs';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const { kafkaBrokers } = testServers();
const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Bytes per second the client may produce and fetch. Kafka measures a rate over about ten seconds,
 * so the first 80–100 KB go through unthrottled; after that each request of a few KB is throttled
 * for a few hundred milliseconds.
 */
const PRODUCE_QUOTA = 10_000;
const FETCH_QUOTA = 10_000;
const VALUE = 'x'.repeat(2_000);
/** Sends in flight at once each round, each its own Produce request. */
const PER_ROUND = 3;
/** Rounds go on until this many throttles; a quota that never bites fails the test. */
const THROTTLES = 6;
const MAX_ROUNDS = 150;
/**
 * How long after a throttle's end a request it held may wait, besides the event loop's longest
 * delay in the test (a timer on a busy machine fires late whatever kafkajs does).
 */
const SLACK_MS = 50;
const loopDelay = monitorEventLoopDelay({ resolution: 10 });

/** Sets byte-rate quotas for `clientId` with Kafka's own ConfigCommand. */
async function limitClient(clientId: string): Promise<void> {
  const lib = join(rootDir, 'infra', 'kafka', 'target', DEFAULT_KAFKA_VERSION, 'lib');
  if (!existsSync(lib)) throw new Error(`no Kafka jars in ${lib}: run pnpm stack:up`);
  const quotas = `producer_byte_rate=${String(PRODUCE_QUOTA)},consumer_byte_rate=${String(FETCH_QUOTA)}`;
  await promisify(execFile)(
    'java',
    [
      ...['-cp', `${lib}/*`, 'org.apache.kafka.tools.ConfigCommand'],
      ...['--bootstrap-server', kafkaBrokers.join(','), '--alter', '--add-config', quotas],
      ...['--entity-type', 'clients', '--entity-name', clientId],
    ],
    { timeout: 60_000 },
  );
}

interface Request {
  apiName: string;
  createdAt: number;
  sentAt: number;
}
interface Throttle {
  /** When kafkajs read the throttle time (just before it set the queue's end). */
  at: number;
  ms: number;
}

/** A client as `clientId` that records its throttles and its requests of `apiName`. */
function watchedClient(clientId: string) {
  const throttles: Throttle[] = [];
  const requests: Request[] = [];
  const kafka = new Kafka({
    clientId,
    brokers: kafkaBrokers,
    logLevel: logLevel.DEBUG,
    logCreator: () => (entry) => {
      const match = /^Client side throttling in effect for (\d+)ms$/.exec(entry.log.message);
      if (match) throttles.push({ at: Date.now(), ms: Number(match[1]) });
    },
  });
  /** A REQUEST listener that records the requests of `apiName`. */
  const record =
    (apiName: string) =>
    ({ payload }: RequestEvent) => {
      if (payload.apiName === apiName) requests.push(payload);
    };
  return { kafka, throttles, requests, record };
}

/**
 * Requests sent inside a throttle, and the longest wait of a request past the moment it could go
 * (its creation, or the end of the last throttle read before it went).
 */
function judge(requests: readonly Request[], throttles: readonly Throttle[]) {
  const early = requests.filter((request) =>
    throttles.some((t) => t.at < request.sentAt && request.sentAt < t.at + t.ms),
  );
  const waits = requests.map((request) => {
    const ends = throttles.filter((t) => t.at < request.sentAt).map((t) => t.at + t.ms);
    return request.sentAt - Math.max(request.createdAt, ...ends);
  });
  return { early, longestWait: Math.max(...waits) };
}

function expectHeldOnlyByThrottles(requests: readonly Request[], throttles: readonly Throttle[]) {
  // The quota took effect: the broker throttled the client, again and again.
  expect(throttles.length).toBeGreaterThanOrEqual(THROTTLES);
  const { early, longestWait } = judge(requests, throttles);
  expect(early, 'requests sent inside a throttle').toEqual([]);
  const loopMs = loopDelay.max / 1e6;
  expect(
    longestWait,
    `throttles ${JSON.stringify(throttles)}, event loop delayed up to ${loopMs.toFixed(0)} ms`,
  ).toBeLessThanOrEqual(SLACK_MS + loopMs);
}

/** Sends rounds of {@link PER_ROUND} records until the broker has throttled enough; how many. */
async function produceUntilThrottled(producer: Producer, topic: string, throttles: Throttle[]) {
  let sent = 0;
  for (let round = 0; round < MAX_ROUNDS && throttles.length < THROTTLES; round++) {
    await Promise.all(
      Array.from({ length: PER_ROUND }, () =>
        producer.send({ topic, acks: -1, messages: [{ value: `${String(sent++)}:${VALUE}` }] }),
      ),
    );
  }
  return sent;
}

describe('a broker quota throttles kafkajs (KIP-219)', { timeout: 240_000 }, () => {
  it('holds produce and fetch requests until each throttle ends, sends them then, loses nothing', async () => {
    const topic = uniqueName('throttle');
    const clientId = uniqueName('throttled');
    await createTopics(kafkaBrokers, [{ topic, numPartitions: 1 }]);
    await limitClient(clientId);
    loopDelay.enable();

    const producing = watchedClient(clientId);
    const producer = producing.kafka.producer({ allowAutoTopicCreation: false });
    producer.on(producer.events.REQUEST, producing.record('Produce'));
    await producer.connect();
    const sent = await produceUntilThrottled(producer, topic, producing.throttles).finally(() =>
      producer.disconnect(),
    );
    expect(producing.requests).toHaveLength(sent);
    expectHeldOnlyByThrottles(producing.requests, producing.throttles);

    // Small fetches, so that the consumer quota throttles fetch after fetch.
    const fetching = watchedClient(clientId);
    const consumer = fetching.kafka.consumer({
      groupId: uniqueName('throttled'),
      maxBytesPerPartition: 4096,
      maxBytes: 4096,
    });
    consumer.on(consumer.events.REQUEST, fetching.record('Fetch'));
    const read: number[] = [];
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        read.push(Number(message.value?.toString().split(':', 1)[0]));
        await Promise.resolve();
      },
    });
    try {
      await waitFor(() => read.length >= sent, { timeoutMs: 90_000, message: `${sent} records` });
    } finally {
      await consumer.disconnect();
    }
    // Each round's sends race each other; rounds are in order, and nothing is missing.
    const rounds = read.map((n) => Math.floor(n / PER_ROUND));
    expect(rounds).toEqual([...rounds].sort((a, b) => a - b));
    expect(new Set(read).size).toBe(sent);
    expectHeldOnlyByThrottles(fetching.requests, fetching.throttles);
  });
});
