import { isSluiceError } from '@sluice/errors';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  assertFormatVersion,
  DEFAULT_KAFKA_VERSION,
  kafkaDistribution,
  kafkaLine,
  recordFormatVersion,
} from './kafka-versions.js';

describe('kafkaDistribution', () => {
  it('runs Kafka 4 with Log4j 2 and the tools module, Kafka 3.9 with reload4j', () => {
    expect(DEFAULT_KAFKA_VERSION).toMatch(/^4\.4\.\d+$/);
    expect(kafkaDistribution('/k', '4.4.0')).toEqual({
      version: '4.4.0',
      line: '4.4',
      libDir: '/k/target/4.4.0/lib',
      loggingArgs: ['-Dlog4j2.configurationFile=/k/log4j2.yaml'],
      configCommand: 'org.apache.kafka.tools.ConfigCommand',
    });
    expect(kafkaDistribution('/k', '3.9.2')).toMatchObject({
      libDir: '/k/target/3.9.2/lib',
      loggingArgs: ['-Dlog4j.configuration=file:/k/log4j.properties'],
      configCommand: 'kafka.admin.ConfigCommand',
    });
  });

  it('refuses a line it does not run', () => {
    for (const version of ['3.8.1', '2.8.0', '4.4', 'latest']) {
      let error: unknown;
      try {
        kafkaDistribution('/k', version);
      } catch (caught) {
        error = caught;
      }
      expect(isSluiceError(error, 'kafka_version_unsupported')).toBe(true);
    }
  });

  it('names a line by major and minor', () => {
    expect(kafkaLine('3.9.2')).toBe('3.9');
  });
});

describe('assertFormatVersion', () => {
  const dirs: string[] = [];
  afterAll(() => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))));
  const dataDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sluice-kafka-version-'));
    dirs.push(dir);
    return dir;
  };

  it('accepts data of the same line, another patch release too', async () => {
    const dir = await dataDir();
    await recordFormatVersion(dir, '4.4.0');
    await expect(assertFormatVersion(dir, '4.4.1')).resolves.toBeUndefined();
  });

  it('refuses data of another line, saying how to keep it or start afresh', async () => {
    const dir = await dataDir();
    await recordFormatVersion(dir, '4.4.0');
    await expect(assertFormatVersion(dir, '3.9.2')).rejects.toMatchObject({
      code: 'kafka_version_mismatch',
      message: expect.stringContaining('SLUICE_KAFKA_VERSION=4.4.0') as unknown,
    });
  });

  it('takes data formatted without a record for Kafka 3.9, the line that formatted it', async () => {
    const dir = await dataDir();
    await expect(assertFormatVersion(dir, '4.4.0')).resolves.toBeUndefined();
    await mkdir(join(dir, 'logs'));
    await writeFile(join(dir, 'logs', 'meta.properties'), 'version=1\n');
    await expect(assertFormatVersion(dir, '3.9.2')).resolves.toBeUndefined();
    await expect(assertFormatVersion(dir, '4.4.0')).rejects.toMatchObject({
      message: expect.stringContaining(`pnpm stack:down`) as unknown,
    });
  });
});
