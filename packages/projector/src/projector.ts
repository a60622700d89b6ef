import { deadLetterTopicFor } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { createTopicEnsurer } from '@sluice/kafka';
import type { Projector, ProjectorOptions } from './api.js';
import type { OperatorRequest } from './audit.js';
import { createBatchGroup } from './batch-group.js';
import {
  applyAlone,
  consumeGeneration,
  reporter,
  topicsOf,
  type ConsumeContext,
  type Report,
} from './consume.js';
import { createDeadLetterSink } from './dead-letters.js';
import type { ProjectorErrorCode } from './errors.js';
import { GenerationSync } from './generation-sync.js';
import { listGenerations, rebuildProgress } from './generations.js';
import { consumerProblems, gapProblems } from './health.js';
import { purgeAppliedBatches } from './applied-batches.js';
import { acceptOffsetGaps, listOffsetGaps } from './offset-gaps.js';
import { acceptVersionGap, redriveParked, skipParked } from './parked.js';
import { listParked } from './parked-records.js';
import type { Projection } from './projection.js';
import { createKafkaRecordSource, deleteConsumerGroups } from './record-source.js';
import { createSharedRecordSource } from './shared-source.js';

const SYSTEM: OperatorRequest = { actor: 'system' };

/**
 * Runs projections as Kafka consumer groups: the active generations it starts with share one
 * (unless `consumerGroups` is `per-projection`), a rebuild has its own. Each partition batch is
 * applied in one PostgreSQL transaction with its checkpoint; Kafka's committed offsets follow
 * afterwards (for lag tools only). A batch that starts past the stored checkpoint makes the
 * consumer seek back to it, or, where Kafka no longer holds those offsets, records the gap.
 */
export function createProjector<DB>(options: ProjectorOptions<DB>): Projector {
  return new ProjectorRuntime(options);
}

/** What {@link createProjector} returns: the generations it consumes, and the operations. */
class ProjectorRuntime<DB> implements Projector {
  private readonly context: ConsumeContext<DB>;
  private readonly generationSync: GenerationSync<DB>;
  private readonly deadLetters: ReturnType<typeof createDeadLetterSink>;
  private started = false;
  private stopped = false;
  private stopPurging: (() => Promise<void>) | undefined;

  constructor(private readonly options: ProjectorOptions<DB>) {
    const { kafka } = options;
    const prefix = options.topicPrefix ?? '';
    const groupPrefix = options.groupPrefix ?? 'sluice.projection.';
    const groupIdOf = (instance: string) => `${groupPrefix}${instance}`;
    const sessionTimeoutMs = options.sessionTimeoutMs ?? 30_000;
    const fetchLingerMs = options.fetchLingerMs ?? 0;
    const deadLetterTopic = (projection: string) => deadLetterTopicFor(projection, prefix);
    const ensureTopics = createTopicEnsurer(kafka, {
      partitions: options.partitions ?? 6,
      replicationFactor: options.replicationFactor,
      minInsyncReplicas: options.minInsyncReplicas,
      onDurabilityProblem: (topic, problem) => options.hooks?.topicDurability?.(topic, problem),
    });
    this.deadLetters = createDeadLetterSink({
      kafka,
      topicOf: deadLetterTopic,
      ensureTopic: (topic) => ensureTopics([topic]),
    });
    const report = reporter(options.hooks);
    const shared = sharedSource(options, report, {
      groupPrefix,
      topicPrefix: prefix,
      sessionTimeoutMs,
      fetchLingerMs,
    });
    this.context = {
      db: options.db,
      kafka,
      topicPrefix: prefix,
      groupIdOf,
      shared: (generation, topics) => {
        if (shared === undefined || !shared.source.open()) return undefined;
        if (this.generationSync.isBuilding(generation.instance)) return undefined;
        // The group it read through before (its own, a rebuild's) would show lag forever.
        const own = groupIdOf(generation.instance);
        void deleteConsumerGroups(kafka, [own]).catch(() => undefined);
        return {
          source: shared.source.view(topics),
          groupId: shared.groupId,
          batches: shared.batches,
        };
      },
      ensureTopics,
      deadLetterTopic,
      deadLetters: this.deadLetters,
      applyOptions: {
        topicPrefix: prefix,
        ...(options.upcast === undefined ? {} : { upcast: options.upcast }),
        ...(options.reveal === undefined ? {} : { reveal: options.reveal }),
        ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
        ...(options.retryDelayMs === undefined ? {} : { retryDelayMs: options.retryDelayMs }),
        recordBatches: (options.journeyRetentionHours ?? 168) > 0,
        tracer: options.tracer,
      },
      report,
      generations: {
        isBuilding: (instance) => this.generationSync.isBuilding(instance),
        admitted: (projection) => this.generationSync.admitted(projection),
      },
      sessionTimeoutMs,
      fetchLingerMs,
      applyConcurrency: options.applyConcurrency ?? 2,
      stopped: () => this.stopped,
    };
    this.generationSync = new GenerationSync({
      db: options.db,
      projections: options.projections,
      consume: (projection, generation) => consumeGeneration(this.context, projection, generation),
      deleteGroups: (instances) => deleteGroupsOf(kafka, instances, groupIdOf),
      changed: (projection, generation, change) =>
        report(projection, (h) => h.generation?.(projection, generation, change)),
      failed: (projection, error) => report(projection, (h) => h.failed?.(projection, error)),
      pollMs: options.generationPollMs ?? 1000,
    });
  }

  async health() {
    const { options } = this;
    const problems = consumerProblems(
      this.generationSync.consumers(),
      options.stalledAfterMs ?? 30_000,
    );
    if (!this.started)
      problems.push({
        code: 'joining',
        projection: '*',
        detail:
          'Waiting for every partition of the topics to have a leader, then joining the consumer groups',
      });
    const names = options.projections.map((p) => p.name);
    problems.push(...(await gapProblems(options.db, names)));
    return { ready: problems.length === 0, problems };
  }

  parked(name?: string) {
    return listParked(this.options.db, name);
  }

  redrive(name: string, aggregate: { type: string; id: string }, request?: OperatorRequest) {
    const { db, deadLetters, applyOptions } = this.context;
    return redriveParked(db, this.named(name), aggregate, deadLetters, applyOptions, request);
  }

  skip(
    name: string,
    record: { topic: string; partition: number; offset: string },
    request?: OperatorRequest,
  ) {
    const { db, deadLetters, applyOptions } = this.context;
    return skipParked(db, this.named(name), record, deadLetters, applyOptions, request);
  }

  acceptVersionGap(
    name: string,
    aggregate: { type: string; id: string },
    request?: OperatorRequest,
  ) {
    const { db, deadLetters, applyOptions } = this.context;
    return acceptVersionGap(db, this.named(name), aggregate, deadLetters, applyOptions, request);
  }

  offsetGaps(name?: string) {
    return listOffsetGaps(this.options.db, name);
  }

  acceptOffsetGaps(name: string, request = SYSTEM) {
    return acceptOffsetGaps(this.options.db, this.named(name).name, request);
  }

  rebuild(name: string, request = SYSTEM) {
    return this.generationSync.rebuild(this.named(name), request);
  }

  cancelRebuild(name: string, request = SYSTEM) {
    return this.generationSync.cancelRebuild(this.named(name).name, request);
  }

  async generations(name: string) {
    this.named(name);
    const list = await listGenerations(this.options.db, name);
    return { generations: list, rebuild: await rebuildProgress(this.options.db, list) };
  }

  async start() {
    await this.generationSync.start();
    this.started = true;
    const retentionHours = this.options.journeyRetentionHours ?? 168;
    if (retentionHours > 0) {
      this.stopPurging = purgeAppliedBatches(this.options.db, {
        retentionHours,
        onFailed: (error) => this.context.report('*', (h) => h.journeyPurgeFailed?.(error)),
      });
    }
  }

  async stop() {
    this.stopped = true;
    await this.stopPurging?.();
    await this.generationSync.stop();
    await this.deadLetters.close();
  }

  private named(name: string): Projection<DB> {
    const projection = this.options.projections.find((p) => p.name === name);
    if (projection === undefined)
      throw new SluiceError<ProjectorErrorCode>(
        'projection_unknown',
        `No projection named ${JSON.stringify(name)}`,
      );
    return projection;
  }
}

/** The record source the active generations share, unless each has its own group. */
function sharedSource<DB>(
  options: ProjectorOptions<DB>,
  report: Report,
  settings: {
    groupPrefix: string;
    topicPrefix: string;
    sessionTimeoutMs: number;
    fetchLingerMs: number;
  },
) {
  const { projections } = options;
  if (options.consumerGroups === 'per-projection' || projections.length < 2) return undefined;
  const sorted = projections.map((p) => p.name).sort();
  const groupId = `${settings.groupPrefix}${sorted.join('+')}`;
  const source = createKafkaRecordSource({
    kafka: options.kafka,
    groupId,
    topics: [...new Set(projections.flatMap((p) => topicsOf(p, settings.topicPrefix)))],
    sessionTimeoutMs: settings.sessionTimeoutMs,
    fetchLingerMs: settings.fetchLingerMs,
  });
  const { db } = options;
  const batches = createBatchGroup(
    db,
    (request) => applyAlone(db, request),
    ({ projection: { name } }, error) => report(name, (hooks) => hooks.failed?.(name, error)),
  );
  return { groupId, source: createSharedRecordSource(source), batches };
}

/** Deletes generations' consumer groups; why Kafka kept some, by instance. */
async function deleteGroupsOf(
  kafka: ProjectorOptions<unknown>['kafka'],
  instances: readonly string[],
  groupIdOf: (instance: string) => string,
): Promise<Map<string, string>> {
  const kept = await deleteConsumerGroups(kafka, instances.map(groupIdOf));
  const byInstance = new Map<string, string>();
  for (const instance of instances) {
    const why = kept.get(groupIdOf(instance));
    if (why !== undefined) byInstance.set(instance, why);
  }
  return byInstance;
}
