import { Type } from '@sinclair/typebox';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { configHelp, configProblems, readCommandLine } from './index.js';

const schema = Type.Object({
  LOG_LEVEL: Type.Union(
    ['info', 'debug'].map((level) => Type.Literal(level)),
    { default: 'info', description: 'How much to log.' },
  ),
  API_TOKEN: Type.String({ minLength: 32, description: 'Signs the tokens.' }),
  DATABASE_URL: Type.String({ pattern: '^postgres://', default: 'postgres://127.0.0.1/shop' }),
  API_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 3000 }),
  REPLICA_URL: Type.Optional(Type.String({ minLength: 1 })),
  BATCH_SIZE: Type.Union([Type.Integer({ minimum: 1 }), Type.Literal('auto')], {
    default: 'auto',
  }),
});
const token = 't'.repeat(32);

describe('configProblems', () => {
  it('names the allowed values of a union of literals, on one line', () => {
    expect(configProblems(schema, { API_TOKEN: token, LOG_LEVEL: 'loud' })).toEqual([
      'LOG_LEVEL must be one of info, debug (is "loud")',
    ]);
  });

  it('describes a union of other kinds on one line too', () => {
    expect(configProblems(schema, { API_TOKEN: token, BATCH_SIZE: 'many' })).toEqual([
      'BATCH_SIZE must be integer 1.. or auto (is "many")',
    ]);
  });

  it('masks the values of secret-looking names and the passwords in URLs', () => {
    const problems = configProblems(schema, {
      API_TOKEN: 'hunter2-hunter2',
      DATABASE_URL: 'mysql://app:hunter2@db:3306/shop',
    });
    expect(problems).toEqual([
      'API_TOKEN must NOT have fewer than 32 characters (is "***")',
      'DATABASE_URL must match pattern "^postgres://" (is "mysql://app:***@db:3306/shop")',
    ]);
  });

  it('takes an empty value as unset: defaults apply, a required variable is missing', () => {
    expect(
      configProblems(schema, { API_TOKEN: '', API_PORT: '', LOG_LEVEL: '', REPLICA_URL: '' }),
    ).toEqual(['API_TOKEN is required and not set']);
  });
});

describe('configHelp', () => {
  const help = configHelp({ command: 'demo', summary: 'Does a demo.', schema });

  it('lists every variable with its default, its constraint and its description', () => {
    expect(help).toContain(
      '  LOG_LEVEL  default "info"; one of info, debug\n      How much to log.',
    );
    expect(help).toContain('  API_PORT  default 3000; integer 1..65535\n');
    expect(help).toContain('  DATABASE_URL  default "postgres://127.0.0.1/shop"; string matching');
  });

  it('tells a required variable from an optional one without a default', () => {
    expect(help).toContain('  API_TOKEN  (required); string of at least 32 characters\n');
    expect(help).toContain('  REPLICA_URL  unset by default; string non-empty\n');
  });

  it('describes a union of other kinds by its branches', () => {
    expect(help).toContain('  BATCH_SIZE  default "auto"; integer 1.. or auto\n');
  });
});

describe('readCommandLine', () => {
  it('reads settings from --settings-file, the environment winning, an empty value counting as unset', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'service-kit-')), 'settings.env');
    writeFileSync(file, `API_TOKEN=${token}\nAPI_PORT=4000\nLOG_LEVEL=debug\n`);
    const { config } = await readCommandLine(
      { command: 'demo', summary: 'Does a demo.', schema },
      ['--settings-file', file],
      { API_PORT: '5000', LOG_LEVEL: '' },
    );
    expect(config).toEqual({
      API_TOKEN: token,
      API_PORT: 5000,
      LOG_LEVEL: 'info',
      DATABASE_URL: 'postgres://127.0.0.1/shop',
      BATCH_SIZE: 'auto',
    });
  });
});

describe('readCommandLine refusing a command line', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('names an unknown flag on one line and exits 64', async () => {
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
      written.push(String(chunk));
      return true;
    });
    vi.spyOn(process, 'exit').mockImplementation((code) => {
      throw new Error(`exit ${String(code)}`);
    });
    await expect(
      readCommandLine({ command: 'demo', summary: 'Does a demo.', schema }, ['--chekc'], {}),
    ).rejects.toThrow('exit 64');
    expect(written).toEqual(['demo: unknown flag --chekc (see --help)\n']);
  });
});

describe('readCommandLine and the OpenTelemetry variables', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('hands OTEL_* settings of a --settings-file to the SDK through the environment', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'service-kit-')), 'settings.env');
    writeFileSync(
      file,
      `API_TOKEN=${token}\nOTEL_SERVICE_NAME=billing\nOTEL_TRACES_SAMPLER=always_on\n`,
    );
    const env: NodeJS.ProcessEnv = { OTEL_TRACES_SAMPLER: 'always_off' };
    await readCommandLine(
      { command: 'demo', summary: 'Does a demo.', schema },
      ['--settings-file', file],
      env,
    );
    expect(env).toMatchObject({ OTEL_SERVICE_NAME: 'billing', OTEL_TRACES_SAMPLER: 'always_off' });
  });

  it('refuses invalid ones, one line each, with exit 78', async () => {
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
      written.push(String(chunk));
      return true;
    });
    vi.spyOn(process, 'exit').mockImplementation((code) => {
      throw new Error(`exit ${String(code)}`);
    });
    const env = {
      API_TOKEN: token,
      OTEL_TRACES_EXPORTER: 'otpl',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
      OTEL_TRACES_SAMPLER_ARG: '1.5',
    };
    await expect(
      readCommandLine({ command: 'demo', summary: 'Does a demo.', schema }, [], env),
    ).rejects.toThrow('exit 78');
    expect(written).toEqual([
      'demo: OTEL_TRACES_EXPORTER must be otlp or none (is otpl)\n',
      'demo: the OTLP protocol must be one of http/protobuf, http/json (is grpc)\n',
      'demo: OTEL_TRACES_SAMPLER_ARG must be a number 0..1 (is "1.5")\n',
    ]);
  });
});
