import { describe, expect, it } from 'vitest';
import { createKafka, parseBrokers, type KafkaLogger } from './create-kafka.js';

function recordingLogger() {
  const lines: { level: string; fields: Record<string, unknown>; message: string }[] = [];
  const at =
    (level: string) =>
    (fields: Record<string, unknown>, message: string): void => {
      lines.push({ level, fields, message });
    };
  const logger: KafkaLogger = {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
  };
  return { logger, lines };
}

describe('createKafka', () => {
  it("sends kafkajs' entries to the logger, namespaced under `kafka`", async () => {
    const { logger, lines } = recordingLogger();
    // Nothing listens on port 1: the client logs why it cannot connect.
    const kafka = createKafka({
      clientId: 'sluice-test',
      brokers: ['127.0.0.1:1'],
      logger,
      connectionTimeoutMs: 500,
      retry: { retries: 0 },
    });
    const admin = kafka.admin();
    await expect(admin.connect()).rejects.toThrow(/ECONNREFUSED/);
    expect(lines[0]).toMatchObject({
      level: 'error',
      message: 'Connection error: connect ECONNREFUSED 127.0.0.1:1',
      fields: {
        kafka: { namespace: 'Connection', broker: '127.0.0.1:1', clientId: 'sluice-test' },
      },
    });
    expect(lines[0]?.fields.kafka).not.toHaveProperty('message');
  });
});

describe('parseBrokers', () => {
  it('splits on commas, trims, and drops empty entries', () => {
    expect(parseBrokers(' kafka-1:9092, kafka-2:9092,,')).toEqual(['kafka-1:9092', 'kafka-2:9092']);
  });
});
