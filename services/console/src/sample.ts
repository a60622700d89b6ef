// What one round of the sampler read: PostgreSQL, Kafka and the services' HTTP servers.
import type { Metrics } from './prometheus.js';

/** The relay's replication slot, from pg_replication_slots and pg_stat_replication. */
export interface SlotReading {
  name: string;
  exists: boolean;
  walStatus: string | null;
  safeWalSizeBytes: number | null;
  confirmedLsn: string | null;
  currentLsn: string;
  lagBytes: number | null;
  /** Seconds since the slot's reader last reported its position; null when none reads it. */
  replyAgeSeconds: number | null;
}

/** A generation of a projection that is not retired. */
export interface GenerationReading {
  generation: number;
  instance: string;
  state: string;
}

/** A partition's checkpoint: the next offset a generation applies. */
export interface CheckpointReading {
  instance: string;
  topic: string;
  partition: number;
  nextOffset: number;
}

/** A projection's bookkeeping in `sluice`. */
export interface ProjectionReading {
  projection: string;
  generations: GenerationReading[];
  checkpoints: CheckpointReading[];
  /** Distinct aggregates among its generations' first parked records (a bounded walk). */
  parkedAggregates: number;
}

/** The outbox's newest rows. */
export interface OutboxReading {
  /** Unix milliseconds of the newest row; null for an empty outbox. */
  newestAt: number | null;
  /** Rows that occurred in the last `windowSeconds` (counted up to a cap). */
  recentRows: number;
  windowSeconds: number;
  /** Rows since the oldest unpublished transaction (counted up to a cap); null when unknown. */
  unpublished: number | null;
}

/** What PostgreSQL said; `error` when it could not be read. */
export interface DatabaseReading {
  error?: string;
  slot?: SlotReading;
  outbox?: OutboxReading;
  projections: ProjectionReading[];
}

/** What Kafka said: each topic's end offset per partition; `error` when it could not be read. */
export interface KafkaReading {
  error?: string;
  endOffsets: Record<string, number[]>;
  /** Records each topic holds (end minus start offsets): the dead-letter topics' sizes. */
  sizes: Record<string, number>;
}

/** A service's /readyz and /metrics. */
export interface ServiceReading {
  url: string;
  reachable: boolean;
  ready: boolean;
  /** `/readyz`'s `status` (a relay: leading, standby, blocked, stopping). */
  status: string | null;
  /** `/readyz`'s `message`, or why it could not be reached. */
  message?: string;
  metrics?: Metrics;
}

/** A projection a projector hosts, from its `/projections`. */
export interface HostedProjection {
  projection: string;
  rebuild?: { generation: number; behind: number };
}

/** A projector: its service reading and the projections it hosts. */
export interface ProjectorReading extends ServiceReading {
  hosted: HostedProjection[];
}

/** One round of the sampler. */
export interface Sample {
  /** Unix milliseconds. */
  at: number;
  database: DatabaseReading;
  kafka: KafkaReading;
  relays: ServiceReading[];
  projectors: ProjectorReading[];
  apis: ServiceReading[];
}
