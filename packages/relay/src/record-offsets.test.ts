import type { SerializedEvent } from '@sluice/contracts';
import { Partitioners, type Kafka, type Message, type ProducerConfig } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import type { OutgoingRecord } from './outgoing-records.js';
import { locateRecords, partitionNoting } from './record-offsets.js';

function outgoing(id: string, topic: string, key: string): OutgoingRecord {
  return {
    topic,
    message: { key, value: '{}' },
    event: { id } as SerializedEvent,
    commitLsn: '0/16B3748',
    commitTime: new Date(0),
    bytes: 10,
    compress: false,
    oversized: false,
  };
}

/** A Kafka whose producers only remember the config they were made with. */
function fakeKafka(): { kafka: Kafka; configs: ProducerConfig[] } {
  const configs: ProducerConfig[] = [];
  const kafka = {
    producer: (config: ProducerConfig) => {
      configs.push(config);
      return {};
    },
  } as unknown as Kafka;
  return { kafka, configs };
}

const partitionMetadata = [0, 1, 2, 3, 4, 5].map((partitionId) => ({
  partitionId,
  leader: 1,
  partitionErrorCode: 0,
  replicas: [1],
  isr: [1],
}));

describe('partitionNoting', () => {
  it('keeps the producer settings and notes what the partitioner picks for each message', () => {
    const { kafka, configs } = fakeKafka();
    const chosen = new WeakMap<Message, number>();
    partitionNoting(kafka, chosen).producer({
      idempotent: true,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    const [config] = configs;
    expect(config?.idempotent).toBe(true);
    const partition = config?.createPartitioner?.() ?? (() => -1);
    const direct = Partitioners.DefaultPartitioner();
    const messages: Message[] = ['a', 'b', 'cart-17', 'cart-18'].map((key) => ({ key, value: '' }));
    for (const message of messages) {
      const args = { topic: 't', partitionMetadata, message };
      expect(partition(args)).toBe(direct(args));
      expect(chosen.get(message)).toBe(direct(args));
    }
  });

  it('leaves a message whose partition changed between attempts unknown', () => {
    const { kafka, configs } = fakeKafka();
    const chosen = new WeakMap<Message, number>();
    let next = 0;
    partitionNoting(kafka, chosen).producer({ createPartitioner: () => () => next++ });
    const partition = configs[0]?.createPartitioner?.() ?? (() => -1);
    const message = { key: 'k', value: '' };
    partition({ topic: 't', partitionMetadata, message });
    partition({ topic: 't', partitionMetadata, message });
    expect(chosen.get(message)).toBe(-1);
  });
});

describe('locateRecords', () => {
  it('numbers each partition’s records from its base offset, in send order', () => {
    const sent = [
      outgoing('e1', 'a', 'k1'),
      outgoing('e2', 'a', 'k2'),
      outgoing('e3', 'a', 'k1'),
      outgoing('e4', 'b', 'k3'),
    ];
    const chosen = new WeakMap<Message, number>(
      sent.map((item, i) => [item.message, [0, 1, 0, 0][i] ?? -1]),
    );
    const located = locateRecords(
      sent,
      [
        { topicName: 'a', partition: 0, errorCode: 0, baseOffset: '41' },
        { topicName: 'a', partition: 1, errorCode: 0, baseOffset: '7' },
        { topicName: 'b', partition: 0, errorCode: 0, baseOffset: '0' },
      ],
      chosen,
    );
    expect(located?.map((r) => [r.eventId, r.topic, r.partition, r.offset])).toEqual([
      ['e1', 'a', 0, '41'],
      ['e2', 'a', 1, '7'],
      ['e3', 'a', 0, '42'],
      ['e4', 'b', 0, '0'],
    ]);
    expect(located?.[0]).toMatchObject({ commitLsn: '0/16B3748', commitTime: new Date(0) });
  });

  it('counts exactly past 2^53', () => {
    const sent = [outgoing('e1', 'a', 'k1'), outgoing('e2', 'a', 'k2'), outgoing('e3', 'a', 'k3')];
    const chosen = new WeakMap<Message, number>(sent.map((item) => [item.message, 0]));
    const baseOffset = '9007199254740991'; // 2^53 - 1
    const acknowledged = [{ topicName: 'a', partition: 0, errorCode: 0, baseOffset }];
    expect(locateRecords(sent, acknowledged, chosen)?.map((r) => r.offset)).toEqual([
      '9007199254740991',
      '9007199254740992',
      '9007199254740993',
    ]);
  });

  it('locates nothing when a record’s partition or its acknowledgement is unknown', () => {
    const [first, second] = [outgoing('e1', 'a', 'k1'), outgoing('e2', 'a', 'k2')];
    const sent = [first, second];
    const chosen = new WeakMap<Message, number>([[first.message, 0]]);
    const acknowledged = [{ topicName: 'a', partition: 0, errorCode: 0, baseOffset: '3' }];
    expect(locateRecords(sent, acknowledged, chosen)).toBeUndefined();
    chosen.set(second.message, 2);
    expect(locateRecords(sent, acknowledged, chosen)).toBeUndefined();
    chosen.set(second.message, -1);
    expect(locateRecords(sent, acknowledged, chosen)).toBeUndefined();
  });
});
