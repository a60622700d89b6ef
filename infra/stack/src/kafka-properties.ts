/** A voter of the controller quorum. */
export interface Voter {
  nodeId: number;
  controllerPort: number;
}

/** What makes one node's `server.properties` its own. */
export interface NodeSettings {
  nodeId: number;
  /** Client port on 127.0.0.1 (unused by a controller alone). */
  port: number;
  controllerPort: number;
  /** `log.dirs`. */
  logDir: string;
  /** The controller quorum. */
  voters: readonly Voter[];
  /** How many brokers the cluster has: its topics' replication follows. */
  brokers: number;
  /** A broker or a controller alone; both (combined) when omitted. */
  role?: 'broker' | 'controller';
  /** A SASL_SSL listener: its port, its PEM keystore, and what it accepts of clients. */
  secure?: SecureListener;
}

/** What a SASL_SSL listener offers clients to test with. */
export interface SecureListener {
  port: number;
  /** The broker's PEM key and certificate. */
  keystore: string;
  /** PEM of the CA whose client certificates it verifies (mutual TLS); presenting one is optional. */
  truststore: string;
  /**
   * The user SASL/PLAIN accepts (SCRAM's credentials are stored in the cluster instead); the
   * password goes into the properties file as it is, so it must need no quoting.
   */
  plain: { username: string; password: string };
}

/**
 * Replicas of every topic and the minimum in sync, by cluster size: a single replica on one node,
 * three (two in sync) from three nodes on, so a cluster survives one node down and refuses
 * `acks=all` writes with two down.
 */
export function replicationOf(nodes: number): { replicas: number; minInsync: number } {
  const replicas = Math.min(nodes, 3);
  return { replicas, minInsync: replicas >= 3 ? 2 : 1 };
}

/** Sets `key` to `value` in a properties text: in place when it is there, else appended. */
function setProperty(text: string, key: string, value: string): string {
  const line = new RegExp(`^${key.replaceAll('.', '\\.')}=.*$`, 'm');
  return line.test(text)
    ? text.replace(line, `${key}=${value}`)
    : `${text.trimEnd()}\n${key}=${value}\n`;
}

/**
 * One node's `server.properties`: `template` (`infra/kafka/server.properties`, written for a
 * single node) with its `${…}` placeholders filled in, its node id and voters set, and the
 * replication of its cluster's topics.
 */
export function nodeProperties(template: string, node: NodeSettings): string {
  const { secure } = node;
  const values: Record<string, string> = {
    port: String(node.port),
    controllerPort: String(node.controllerPort),
    dataDir: node.logDir,
    secureListener: secure === undefined ? '' : `,SASL_SSL://127.0.0.1:${secure.port}`,
    secureAdvertised: secure === undefined ? '' : `,SASL_SSL://localhost:${secure.port}`,
  };
  let text = template.replace(/\$\{(\w+)\}/g, (_, key: string) => values[key] ?? '');
  const voters = node.voters.map((voter) => `${voter.nodeId}@127.0.0.1:${voter.controllerPort}`);
  text = setProperty(text, 'node.id', String(node.nodeId));
  text = setProperty(text, 'controller.quorum.voters', voters.join(','));
  if (node.brokers > 1) {
    const { replicas, minInsync } = replicationOf(node.brokers);
    for (const key of [
      'offsets.topic.replication.factor',
      'transaction.state.log.replication.factor',
      'default.replication.factor',
    ]) {
      text = setProperty(text, key, String(replicas));
    }
    text = setProperty(text, 'transaction.state.log.min.isr', String(minInsync));
    text = setProperty(text, 'min.insync.replicas', String(minInsync));
  }
  if (node.role === 'controller') return controllerOnly(text, node.controllerPort);
  if (node.role === 'broker') text = brokerOnly(text);
  return secure === undefined ? text : withSecureListener(text, secure);
}

/**
 * Adds the SASL_SSL listener's settings: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, and a client
 * certificate verified against `truststore` when one is presented. Its key and certificate are in
 * one PEM keystore.
 */
function withSecureListener(text: string, secure: SecureListener): string {
  const scram = 'org.apache.kafka.common.security.scram.ScramLoginModule required;';
  const { username, password } = secure.plain;
  const plain = `org.apache.kafka.common.security.plain.PlainLoginModule required user_${username}="${password}";`;
  const mapped = text.replace(/^(listener\.security\.protocol\.map=.*)$/m, '$1,SASL_SSL:SASL_SSL');
  return [
    mapped.trimEnd(),
    '',
    '# SASL_SSL listener for clients that test TLS, SASL and mutual TLS.',
    'sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512',
    'listener.name.sasl_ssl.ssl.keystore.type=PEM',
    `listener.name.sasl_ssl.ssl.keystore.location=${secure.keystore}`,
    'listener.name.sasl_ssl.ssl.client.auth=requested',
    'listener.name.sasl_ssl.ssl.truststore.type=PEM',
    `listener.name.sasl_ssl.ssl.truststore.location=${secure.truststore}`,
    `listener.name.sasl_ssl.plain.sasl.jaas.config=${plain}`,
    `listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=${scram}`,
    `listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=${scram}`,
    '',
  ].join('\n');
}

/** A broker alone: no controller listener of its own, the quorum elsewhere. */
function brokerOnly(text: string): string {
  const withRole = setProperty(text, 'process.roles', 'broker');
  return withRole.replace(/^(listeners=.*?),CONTROLLER:\/\/[^,\n]*/m, '$1');
}

/** A controller alone: its controller listener only, no client listener to advertise. */
function controllerOnly(text: string, controllerPort: number): string {
  const withRole = setProperty(text, 'process.roles', 'controller');
  return setProperty(withRole, 'listeners', `CONTROLLER://127.0.0.1:${controllerPort}`)
    .replace(/^advertised\.listeners=.*\n/m, '')
    .replace(/^inter\.broker\.listener\.name=.*\n/m, '');
}
