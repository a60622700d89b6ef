import { Kafka, logLevel, Partitioners, type ProducerConfig } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ACKS_ALL, idempotentProducer } from './producer.js';

describe('idempotentProducer', () => {
  it('creates every producer with the idempotent settings, plus what the caller adds', () => {
    const configs: ProducerConfig[] = [];
    const kafka = {
      producer: (config: ProducerConfig) => configs.push(config),
    } as unknown as Kafka;
    idempotentProducer(kafka, { transactionTimeout: 30_000 });
    expect(configs).toEqual([
      {
        idempotent: true,
        maxInFlightRequests: 1,
        allowAutoTopicCreation: false,
        createPartitioner: Partitioners.DefaultPartitioner,
        transactionTimeout: 30_000,
      },
    ]);
  });

  it('refuses a send that does not wait for all replicas', async () => {
    const kafka = new Kafka({ brokers: ['127.0.0.1:1'], logLevel: logLevel.NOTHING });
    const producer = idempotentProducer(kafka);
    const messages = [{ value: 'v' }];
    await expect(producer.send({ topic: 't', acks: 1, messages })).rejects.toThrow(
      /invalidates the idempotent producer/,
    );
    expect(ACKS_ALL).toBe(-1);
  });
});
