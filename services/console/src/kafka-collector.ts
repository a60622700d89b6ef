// Reads the end offsets of the topics the projections read, and the sizes of their dead-letter
// topics, through one kafkajs admin client.
import { errorMessage } from '@sluice/errors';
import type { Admin } from 'kafkajs';
import type { KafkaReading } from './sample.js';

/** Reads Kafka's part of a sample; see {@link KafkaCollector.collect}. */
export class KafkaCollector {
  private connected: Promise<void> | undefined;

  constructor(private readonly admin: Admin) {}

  /**
   * End offsets of `topics` (per partition) and the records `counted` topics hold. A topic that
   * does not exist is left out; a failure to reach Kafka is reported in `error`.
   */
  async collect(topics: readonly string[], counted: readonly string[]): Promise<KafkaReading> {
    const reading: KafkaReading = { endOffsets: {}, sizes: {} };
    try {
      this.connected ??= this.admin.connect();
      await this.connected;
      const existing = new Set(await this.admin.listTopics());
      const wanted = [...new Set([...topics, ...counted])].filter((t) => existing.has(t));
      await Promise.all(
        wanted.map(async (topic) => {
          const offsets = await this.admin.fetchTopicOffsets(topic);
          const ends: number[] = [];
          let size = 0;
          for (const { partition, high, low } of offsets) {
            ends[partition] = Number(high);
            size += Number(high) - Number(low);
          }
          reading.endOffsets[topic] = ends;
          reading.sizes[topic] = size;
        }),
      );
      return reading;
    } catch (error) {
      this.connected = undefined;
      await this.admin.disconnect().catch(() => undefined);
      return { ...reading, error: errorMessage(error) };
    }
  }

  /** Disconnects the admin client. */
  async close(): Promise<void> {
    await this.admin.disconnect();
  }
}
