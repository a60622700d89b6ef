// The Kafka sink's record decisions, against a fake Kafka client (the sink's only dependency).
import type { SerializedEvent } from '@sluice/contracts';
import { CompressionTypes, type Kafka, type ProducerBatch } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { createKafkaSink, type ClaimCheckStore } from './event-sink.js';
import { Lsn } from './lsn.js';

function fakeKafka(failures = 0, maxMessagesPerSend = Infinity) {
  const batches: ProducerBatch[] = [];
  const created: string[] = [];
  let producers = 0;
  let toFail = failures;
  const kafka = {
    producer: () => {
      producers += 1;
      return {
        connect: () => Promise.resolve(),
        disconnect: () => Promise.resolve(),
        sendBatch: (batch: ProducerBatch) => {
          if (toFail > 0) {
            toFail -= 1;
            return Promise.reject(new Error('broker gone'));
          }
          const count = (batch.topicMessages ?? []).reduce((n, t) => n + t.messages.length, 0);
          if (count > maxMessagesPerSend) {
            return Promise.reject(
              Object.assign(new Error('too large'), { type: 'MESSAGE_TOO_LARGE' }),
            );
          }
          batches.push(batch);
          return Promise.resolve([]);
        },
      };
    },
    admin: () => ({
      connect: () => Promise.resolve(),
      disconnect: () => Promise.resolve(),
      listTopics: () => Promise.resolve(created),
      createTopics: ({ topics }: { topics: { topic: string }[] }) => {
        created.push(...topics.map((t) => t.topic));
        return Promise.resolve(true);
      },
      fetchTopicMetadata: ({ topics }: { topics: string[] }) =>
        Promise.resolve({
          topics: topics.map((name) => ({ name, partitions: [{ partitionId: 0, leader: 1 }] })),
        }),
    }),
  } as unknown as Kafka;
  return { kafka, batches, created, producers: () => producers };
}

const event = (id: string, payload: unknown): SerializedEvent => ({
  id,
  type: 'cart.opened.v1',
  aggregateType: 'cart',
  aggregateId: `cart-${id}`,
  aggregateVersion: 1,
  occurredAt: '2026-01-01T00:00:00.000Z',
  payloadJson: JSON.stringify(payload),
  metadata: {},
});

describe('Kafka sink', () => {
  it('creates the topic once, keys by aggregate id, and compresses only batches with a large record', async () => {
    const fake = fakeKafka();
    const sink = createKafkaSink({
      kafka: fake.kafka,
      source: '/test',
      topicPrefix: 'p.',
      compressAboveBytes: 100,
    });
    await sink.publish([{ event: event('1', { small: true }), commitLsn: Lsn.parse('0/10') }]);
    await sink.publish([
      { event: event('2', { big: 'x'.repeat(500) }), commitLsn: Lsn.parse('0/20') },
    ]);
    expect(fake.created).toEqual(['p.outbox.event.cart']);
    expect(fake.batches[0]?.compression).toBeUndefined();
    expect(fake.batches[1]?.compression).toBe(CompressionTypes.GZIP);
    const message = fake.batches[0]?.topicMessages?.[0]?.messages[0];
    expect(message?.key).toBe('cart-1');
    expect(message?.headers).toMatchObject({
      ce_id: '1',
      ce_commitlsn: '0/10',
      ce_source: '/test',
    });
    expect(fake.batches[0]?.acks).toBe(-1);
  });

  it('sends payloads above the record limit by claim check, with a dataref and no value', async () => {
    const fake = fakeKafka();
    const stored = new Map<string, string>();
    const claimChecks: ClaimCheckStore = {
      put: (e) => {
        stored.set(e.id, e.payloadJson);
        return Promise.resolve(`urn:test:${e.id}`);
      },
    };
    const sink = createKafkaSink({
      kafka: fake.kafka,
      source: '/test',
      maxRecordBytes: 1000,
      claimChecks,
    });
    const huge = { blob: 'y'.repeat(5000) };
    await sink.publish([{ event: event('9', huge), commitLsn: Lsn.parse('0/30') }]);
    const message = fake.batches[0]?.topicMessages?.[0]?.messages[0];
    expect(message?.value).toBeNull();
    expect(message?.headers).toMatchObject({ ce_dataref: 'urn:test:9' });
    expect(JSON.parse(stored.get('9') ?? '')).toEqual(huge);
  });

  it('refuses, rather than drops, an oversized payload without a claim-check store', async () => {
    const sink = createKafkaSink({
      kafka: fakeKafka().kafka,
      source: '/test',
      maxRecordBytes: 1000,
    });
    await expect(
      sink.publish([{ event: event('3', { blob: 'z'.repeat(5000) }), commitLsn: Lsn.zero }]),
    ).rejects.toThrow(/exceeds 1000 bytes/);
  });

  it('retries a failed send with a fresh producer', async () => {
    const fake = fakeKafka(2);
    const retries: number[] = [];
    const sink = createKafkaSink({
      kafka: fake.kafka,
      source: '/test',
      retryInitialMs: 1,
      onRetry: (_e, attempt) => retries.push(attempt),
    });
    await sink.publish([{ event: event('4', {}), commitLsn: Lsn.zero }]);
    expect(retries).toEqual([1, 2]);
    expect(fake.producers()).toBe(3);
    expect(fake.batches).toHaveLength(1);
  });

  it('splits sends by bytes, in order, under the broker limit', async () => {
    const fake = fakeKafka();
    const sink = createKafkaSink({ kafka: fake.kafka, source: '/test', maxBatchBytes: 2000 });
    const events = Array.from({ length: 10 }, (_, i) => ({
      event: event(String(i), { pad: 'p'.repeat(300) }),
      commitLsn: Lsn.zero,
    }));
    await sink.publish(events);
    expect(fake.batches.length).toBeGreaterThan(2);
    const sent = fake.batches.flatMap(
      (b) => b.topicMessages?.[0]?.messages.map((m) => m.key) ?? [],
    );
    expect(sent).toEqual(events.map((e) => e.event.aggregateId));
  });

  it('halves a send the broker refuses as too large, keeping the order', async () => {
    const fake = fakeKafka(0, 3);
    const retries: number[] = [];
    const sink = createKafkaSink({
      kafka: fake.kafka,
      source: '/test',
      onRetry: (_e, a) => retries.push(a),
    });
    const events = Array.from({ length: 10 }, (_, i) => ({
      event: event(String(i), {}),
      commitLsn: Lsn.zero,
    }));
    await sink.publish(events);
    const sent = fake.batches.flatMap(
      (b) => b.topicMessages?.[0]?.messages.map((m) => m.key) ?? [],
    );
    expect(sent).toEqual(events.map((e) => e.event.aggregateId));
    expect(retries).toEqual([]);
  });
});
