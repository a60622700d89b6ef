import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createKafkaNode,
  createKafkaServer,
  randomClusterId,
  type KafkaNode,
  type KafkaServer,
  type KafkaServerOptions,
  type SecureListenerOptions,
} from './kafka-server.js';
import { freePortsSync } from './processes.js';

/** The ports of one node. */
export interface KafkaNodePorts {
  port: number;
  controllerPort: number;
  /** The SASL_SSL listener's, when the cluster has one. */
  securePort?: number;
}

/** Options for {@link createKafkaCluster}. */
export interface KafkaClusterOptions {
  /** `infra/kafka`. */
  kafkaHome: string;
  /**
   * Node `n` keeps its data in `<dataDir>/node-<n>`; a cluster of one node in `dataDir` itself,
   * as {@link createKafkaServer} does.
   */
  dataDir: string;
  /** How many brokers. */
  nodes: number;
  /**
   * Controllers of their own, as production clusters run them: the quorum survives any number of
   * brokers down. Default 0: every node is a broker and a voter of the quorum.
   */
  controllers?: number;
  /**
   * Each node's ports, node 1's first, then the controllers'. Default: ports free when the
   * cluster is created.
   */
  ports?: readonly KafkaNodePorts[];
  /** See {@link KafkaServerOptions.version}. */
  version?: string;
  /** `-Xmx` of each node's JVM. Default `1g`. */
  heap?: string;
  log?: (message: string) => void;
  /** A SASL_SSL listener on every node, on its `securePort`. Default: none. */
  secure?: Omit<SecureListenerOptions, 'port'>;
}

/**
 * Apache Kafka nodes in KRaft mode, each a broker and a voter of the controller quorum unless the
 * cluster has controllers of its own. From three brokers on, topics have three replicas and need
 * two in sync (internal topics too).
 */
export interface KafkaCluster {
  /** Broker `i + 1` at index `i`; each starts and stops on its own too. */
  readonly nodes: readonly KafkaServer[];
  /** The controllers of their own, if any. */
  readonly controllers: readonly KafkaServer[];
  /** Every node's client address. */
  readonly brokers: string[];
  /** Every node's SASL_SSL address, when there is such a listener. */
  readonly secureBrokers: string[] | undefined;
  /** Starts the nodes that are not running, together, then waits for a produce with `acks=all`. */
  start(options?: { signal?: AbortSignal }): Promise<void>;
  /** Stops every node (see {@link KafkaServer.stop}). */
  stop(options?: { kill?: boolean; timeoutMs?: number }): Promise<void>;
}

/**
 * A local Kafka cluster of `nodes` nodes.
 *
 * @example
 * const cluster = createKafkaCluster({ kafkaHome: 'infra/kafka', dataDir, nodes: 3 });
 * await cluster.start();
 * await cluster.nodes[0].stop({ kill: true }); // the others keep serving
 */
export function createKafkaCluster(options: KafkaClusterOptions): KafkaCluster {
  return new LocalKafkaCluster(options);
}

/** The cluster id a node was formatted with, else a new one. */
function existingClusterId(dataDirs: readonly string[]): string {
  for (const dir of dataDirs) {
    try {
      const meta = readFileSync(join(dir, 'logs', 'meta.properties'), 'utf8');
      const id = /^cluster\.id=(.+)$/m.exec(meta)?.[1];
      if (id !== undefined) return id.trim();
    } catch {
      // Not formatted yet.
    }
  }
  return randomClusterId();
}

function defaultPorts(nodes: number, secure: boolean): KafkaNodePorts[] {
  const perNode = secure ? 3 : 2;
  const free = freePortsSync(nodes * perNode);
  return Array.from({ length: nodes }, (_, i) => ({
    port: free[i * perNode] ?? 0,
    controllerPort: free[i * perNode + 1] ?? 0,
    ...(secure ? { securePort: free[i * perNode + 2] ?? 0 } : {}),
  }));
}

class LocalKafkaCluster implements KafkaCluster {
  readonly nodes: readonly KafkaServer[];
  readonly controllers: readonly KafkaServer[];
  readonly brokers: string[];
  readonly secureBrokers: string[] | undefined;
  /** Node 1 of a cluster of several, through which the cluster is checked. */
  private readonly first: KafkaNode | undefined;

  constructor(options: KafkaClusterOptions) {
    const { nodes: count, secure } = options;
    const controllers = options.controllers ?? 0;
    const total = count + controllers;
    const ports = options.ports ?? defaultPorts(total, secure !== undefined);
    if (
      !Number.isInteger(count) ||
      count < 1 ||
      !Number.isInteger(controllers) ||
      controllers < 0
    ) {
      throw new RangeError(`A cluster of ${count} brokers and ${controllers} controllers`);
    }
    if (ports.length !== total) {
      throw new RangeError(`A cluster of ${total} nodes with ${ports.length} nodes' ports`);
    }
    const dataDirs = ports.map((_, i) =>
      total === 1
        ? options.dataDir
        : join(options.dataDir, i < count ? `node-${i + 1}` : `controller-${i + 1 - count}`),
    );
    const nodeOptions = (i: number): KafkaServerOptions => {
      const { port, controllerPort, securePort } = ports[i] ?? { port: 0, controllerPort: 0 };
      return {
        kafkaHome: options.kafkaHome,
        dataDir: dataDirs[i] ?? options.dataDir,
        port,
        controllerPort,
        ...(options.version === undefined ? {} : { version: options.version }),
        ...(options.heap === undefined ? {} : { heap: options.heap }),
        ...(options.log === undefined ? {} : { log: options.log }),
        ...(secure === undefined || i >= count
          ? {}
          : { secure: { ...secure, port: securePort ?? 0 } }),
      };
    };
    if (total === 1) {
      this.nodes = [createKafkaServer(nodeOptions(0))];
      this.controllers = [];
    } else {
      const clusterId = existingClusterId(dataDirs);
      const voters = ports
        .map((p, i) => ({ nodeId: i + 1, controllerPort: p.controllerPort }))
        .filter((voter) => controllers === 0 || voter.nodeId > count);
      const role = (i: number) =>
        controllers === 0
          ? {}
          : { role: i < count ? ('broker' as const) : ('controller' as const) };
      const nodes = ports.map((_, i) =>
        createKafkaNode(nodeOptions(i), {
          nodeId: i + 1,
          voters,
          brokers: count,
          clusterId,
          ...role(i),
        }),
      );
      this.nodes = nodes.slice(0, count);
      this.controllers = nodes.slice(count);
      this.first = nodes[0];
    }
    this.brokers = this.nodes.flatMap((node) => node.brokers);
    this.secureBrokers =
      secure === undefined ? undefined : this.nodes.flatMap((node) => node.secureBrokers ?? []);
  }

  async start(startOptions: { signal?: AbortSignal } = {}): Promise<void> {
    const all = [...this.controllers, ...this.nodes];
    const results = await Promise.allSettled(all.map((node) => node.start(startOptions)));
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) {
      throw new AggregateError(failures, failures.map((f) => String(f)).join('\n'));
    }
    // A single node checked both when it started.
    await this.first?.waitForProduce(startOptions.signal);
    await this.first?.ensureScramUser();
  }

  async stop(stopOptions: { kill?: boolean; timeoutMs?: number } = {}): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop(stopOptions)));
    await Promise.all(this.controllers.map((node) => node.stop(stopOptions)));
  }
}
