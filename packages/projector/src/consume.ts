import { topicFor } from '@sluice/contracts';
import type { Kafka } from 'kafkajs';
import type { Kysely } from 'kysely';
import { isConflict, type HandlerFailure } from './apply-events.js';
import type { ProjectorHooks } from './api.js';
import type { BatchGroup } from './batch-group.js';
import { applyBatch, type AppliedBatch, type ApplyOptions, type BatchRequest } from './batch.js';
import { readCheckpoints } from './bookkeeping.js';
import {
  createGenerationConsumer,
  type GenerationConsumer,
  type GenerationEvents,
} from './consumer.js';
import type { Generation } from './generations.js';
import { recordOffsetGap } from './offset-gaps.js';
import type { Projection } from './projection.js';
import { createKafkaRecordSource, type RecordSource } from './record-source.js';
import type { DeadLetterSink } from './records.js';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs a batch transaction again when PostgreSQL aborted it for a deadlock or a serialization
 * conflict with another batch (nothing of it was committed).
 */
async function retryingConflicts<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await run();
    } catch (error) {
      if (!isConflict(error) || attempt >= 5) throw error;
      await pause(20 * 2 ** attempt);
    }
  }
}

/** Calls hooks; a hook that throws is reported, never allowed to fail a batch. */
export function reporter(hooks: ProjectorHooks | undefined) {
  return (projection: string, call: (hooks: ProjectorHooks) => void): void => {
    if (hooks === undefined) return;
    try {
      call(hooks);
    } catch (error) {
      try {
        hooks.failed?.(projection, error);
      } catch {
        // Nothing left to tell it to.
      }
    }
  };
}

/** Calls a hook of a projection's, safely. */
export type Report = ReturnType<typeof reporter>;

/** What consuming a generation needs from the projector. */
export interface ConsumeContext<DB> {
  db: Kysely<DB>;
  kafka: Kafka;
  topicPrefix: string;
  groupIdOf(instance: string): string;
  /** The record source a generation shares with others here, and its group; none: its own. */
  shared(generation: Generation, topics: readonly string[]): SharedView<DB> | undefined;
  ensureTopics(topics: Iterable<string>): Promise<void>;
  deadLetterTopic(projection: string): string;
  deadLetters: DeadLetterSink;
  applyOptions: ApplyOptions;
  report: Report;
  generations: {
    isBuilding(instance: string): boolean;
    admitted(projection: string): Promise<void>;
  };
  sessionTimeoutMs: number;
  fetchLingerMs: number;
  applyConcurrency: number;
  stopped(): boolean;
}

/** A generation's share of the projector's shared record source. */
export interface SharedView<DB> {
  source: RecordSource;
  groupId: string;
  /** Applies its batches with the other generations' of the same fetch. */
  batches: BatchGroup<DB>;
}

/** Applies a batch in a transaction of its own, again after a deadlock or conflict. */
export function applyAlone<DB>(
  db: Kysely<DB>,
  { projection, records, deadLetters, options }: BatchRequest<DB>,
): Promise<AppliedBatch> {
  return retryingConflicts(() => applyBatch(db, projection, records, deadLetters, options));
}

/** What a generation's consumer tells the projector's hooks. */
function generationEvents<DB>(
  context: ConsumeContext<DB>,
  projection: Projection<DB>,
  generation: Generation,
): GenerationEvents {
  const { report } = context;
  const { name } = projection;
  return {
    batch: (parts, applied) =>
      report(name, (h) =>
        h.batch?.({
          projection: name,
          generation: generation.generation,
          building: context.generations.isBuilding(generation.instance),
          partitions: parts.map(({ topic, partition, lag }) => ({ topic, partition, lag })),
          result: applied.result,
        }),
      ),
    failed: (error) => report(name, (h) => h.failed?.(name, error)),
    notice: (notice) => report(name, (h) => h.offsets?.(name, generation.generation, notice)),
    crashed: (error) => {
      if (!context.stopped()) report(name, (h) => h.crashed?.(name, generation.generation, error));
    },
  };
}

/** The topics a projection reads. */
export function topicsOf(
  projection: { aggregateTypes: readonly string[] },
  topicPrefix: string,
): string[] {
  return projection.aggregateTypes.map((type) => topicFor(type, topicPrefix));
}

/** Starts consuming one generation of a projection here. */
export async function consumeGeneration<DB>(
  context: ConsumeContext<DB>,
  projection: Projection<DB>,
  generation: Generation,
): Promise<GenerationConsumer> {
  const { db } = context;
  const { instance } = generation;
  const topics = topicsOf(projection, context.topicPrefix);
  // The dead-letter topic too: created here, not inside the batch transaction of the first
  // poison record, which would hold its locks while Kafka creates a topic.
  await context.ensureTopics([...topics, context.deadLetterTopic(projection.name)]);
  const failures = new Map<string, HandlerFailure>();
  const shared = context.shared(generation, topics);
  const { source, groupId } = shared ?? {
    groupId: context.groupIdOf(instance),
    source: createKafkaRecordSource({
      kafka: context.kafka,
      groupId: context.groupIdOf(instance),
      topics,
      sessionTimeoutMs: context.sessionTimeoutMs,
      fetchLingerMs: context.fetchLingerMs,
    }),
  };
  const apply = (request: BatchRequest<DB>) =>
    shared === undefined ? applyAlone(db, request) : shared.batches.apply(request);
  const batchOptions = {
    ...context.applyOptions,
    generation: generation.generation,
    failures,
    consumerGroup: groupId,
  };
  const consumer = createGenerationConsumer({
    source,
    store: {
      apply: (records, ends) =>
        apply({
          projection,
          records,
          deadLetters: context.deadLetters,
          options: { ...batchOptions, ends },
        }),
      checkpoints: (assignment) => readCheckpoints(db, instance, assignment),
      recordGap: (at, from, to) => recordOffsetGap(db, instance, at, from, to),
    },
    events: generationEvents(context, projection, generation),
    applyConcurrency: context.applyConcurrency,
    admitted: () =>
      context.generations.isBuilding(instance)
        ? Promise.resolve()
        : context.generations.admitted(projection.name),
  });
  await consumer.start();
  return consumer;
}
