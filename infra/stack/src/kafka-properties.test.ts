import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { nodeProperties, replicationOf } from './kafka-properties.js';

const template = readFileSync(
  join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'kafka'), 'server.properties'),
  'utf8',
);

/** A SASL_SSL listener's settings but its port. */
const secure = {
  keystore: '/data/keystore.pem',
  truststore: '/certs/ca.crt',
  plain: { username: 'sluice', password: 'pass-1_2' },
};

/** The properties as a map; a key set twice would keep its last value, so it is refused. */
function parse(text: string): Record<string, string> {
  const properties: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const equals = line.indexOf('=');
    const key = line.slice(0, equals);
    if (key in properties) throw new Error(`${key} twice`);
    properties[key] = line.slice(equals + 1);
  }
  return properties;
}

describe('nodeProperties', () => {
  it('keeps a single node as the template has it, every placeholder filled in', () => {
    const text = nodeProperties(template, {
      nodeId: 1,
      port: 19092,
      controllerPort: 19093,
      logDir: '/data/logs',
      voters: [{ nodeId: 1, controllerPort: 19093 }],
      brokers: 1,
    });
    expect(Object.values(parse(text)).join('\n')).not.toContain('${');
    expect(parse(text)).toMatchObject({
      'node.id': '1',
      'controller.quorum.voters': '1@127.0.0.1:19093',
      listeners: 'PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093',
      'advertised.listeners': 'PLAINTEXT://127.0.0.1:19092',
      'log.dirs': '/data/logs',
      'offsets.topic.replication.factor': '1',
      'transaction.state.log.min.isr': '1',
      'default.replication.factor': '1',
      'min.insync.replicas': '1',
    });
  });

  it('makes node 2 of three a voter among all three, with three replicas and two in sync', () => {
    const properties = parse(
      nodeProperties(template, {
        nodeId: 2,
        port: 19095,
        controllerPort: 19096,
        logDir: '/data/node-2/logs',
        voters: [
          { nodeId: 1, controllerPort: 19093 },
          { nodeId: 2, controllerPort: 19096 },
          { nodeId: 3, controllerPort: 19099 },
        ],
        brokers: 3,
      }),
    );
    expect(properties).toMatchObject({
      'node.id': '2',
      'controller.quorum.voters': '1@127.0.0.1:19093,2@127.0.0.1:19096,3@127.0.0.1:19099',
      listeners: 'PLAINTEXT://127.0.0.1:19095,CONTROLLER://127.0.0.1:19096',
      'offsets.topic.replication.factor': '3',
      'transaction.state.log.replication.factor': '3',
      'transaction.state.log.min.isr': '2',
      'default.replication.factor': '3',
      'min.insync.replicas': '2',
    });
  });

  it('adds a SASL_SSL listener advertised as localhost', () => {
    const properties = parse(
      nodeProperties(template, {
        nodeId: 1,
        port: 19092,
        controllerPort: 19093,
        logDir: '/data/logs',
        voters: [{ nodeId: 1, controllerPort: 19093 }],
        brokers: 1,
        secure: { ...secure, port: 19094 },
      }),
    );
    expect(properties).toMatchObject({
      listeners:
        'PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,SASL_SSL://127.0.0.1:19094',
      'advertised.listeners': 'PLAINTEXT://127.0.0.1:19092,SASL_SSL://localhost:19094',
      'listener.security.protocol.map':
        'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL',
      'listener.name.sasl_ssl.ssl.keystore.location': '/data/keystore.pem',
      'sasl.enabled.mechanisms': 'PLAIN,SCRAM-SHA-256,SCRAM-SHA-512',
      'listener.name.sasl_ssl.ssl.client.auth': 'requested',
      'listener.name.sasl_ssl.ssl.truststore.location': '/certs/ca.crt',
      'listener.name.sasl_ssl.plain.sasl.jaas.config':
        'org.apache.kafka.common.security.plain.PlainLoginModule required user_sluice="pass-1_2";',
    });
  });
});

describe('nodeProperties with controllers of their own', () => {
  const voters = [{ nodeId: 4, controllerPort: 19105 }];

  it('makes a broker alone: no controller listener, the quorum elsewhere', () => {
    const properties = parse(
      nodeProperties(template, {
        nodeId: 2,
        port: 19095,
        controllerPort: 19096,
        logDir: '/data/node-2/logs',
        voters,
        brokers: 3,
        role: 'broker',
        secure: { ...secure, port: 19097 },
      }),
    );
    expect(properties).toMatchObject({
      'process.roles': 'broker',
      'controller.quorum.voters': '4@127.0.0.1:19105',
      listeners: 'PLAINTEXT://127.0.0.1:19095,SASL_SSL://127.0.0.1:19097',
      'controller.listener.names': 'CONTROLLER',
      'min.insync.replicas': '2',
    });
  });

  it('makes a controller alone: its controller listener only, nothing advertised', () => {
    const properties = parse(
      nodeProperties(template, {
        nodeId: 4,
        port: 19104,
        controllerPort: 19105,
        logDir: '/data/controller-1/logs',
        voters,
        brokers: 3,
        role: 'controller',
        secure: { ...secure, port: 19106 },
      }),
    );
    expect(properties).toMatchObject({
      'process.roles': 'controller',
      'node.id': '4',
      listeners: 'CONTROLLER://127.0.0.1:19105',
    });
    expect(properties).not.toHaveProperty('advertised.listeners');
    expect(properties).not.toHaveProperty('inter.broker.listener.name');
    expect(properties).not.toHaveProperty('sasl.enabled.mechanisms');
  });
});

describe('replicationOf', () => {
  it('has one replica on one node and three, two in sync, from three nodes on', () => {
    expect(replicationOf(1)).toEqual({ replicas: 1, minInsync: 1 });
    expect(replicationOf(3)).toEqual({ replicas: 3, minInsync: 2 });
    expect(replicationOf(5)).toEqual({ replicas: 3, minInsync: 2 });
  });
});
