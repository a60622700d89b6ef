// A service as a program: its flags, `--help` from its settings' schema, `--check`, and settings
// from the environment (and an env file) validated once, with one line per problem.
import type { Static, TObject } from '@sinclair/typebox';
import { readFileSync } from 'node:fs';
import { isSluiceError } from '@sluice/errors';
import { parseArgs, parseEnv } from 'node:util';
import { configProblems, constraintOf, loadConfig } from './config.js';
import { tracingProblems } from './tracing.js';
import { ExitCode } from './run-service.js';

/** A program: what `--help` says of it, its settings, and what `--check` checks. */
export interface CommandOptions<S extends TObject> {
  /** The command as typed, e.g. `sluice-relay`. */
  command: string;
  /** What it does, in a sentence or two. */
  summary: string;
  /** Its operands in the usage line, e.g. `<module>...`; none when unset. */
  operands?: string;
  /** Further paragraphs of `--help`, after the variables. */
  notes?: string;
  /** Its settings: every variable, with `default` and `description`. */
  schema: S;
  /**
   * What `--check` checks once the settings are valid (reaching servers, their settings): one
   * line per problem, empty when all is well. Must not change anything.
   */
  check?: (config: Readonly<Static<S>>, operands: readonly string[]) => Promise<string[]>;
}

/** What a program runs with: its validated settings and its operands. */
export interface CommandLine<S extends TObject> {
  config: Readonly<Static<S>>;
  operands: string[];
}

const FLAGS = {
  help: { type: 'boolean', short: 'h' },
  check: { type: 'boolean' },
  'settings-file': { type: 'string' },
} as const;

/**
 * The `--help` text of a program: usage, flags, then every variable with its default, its
 * constraint and its description.
 */
export function configHelp<S extends TObject>(options: CommandOptions<S>): string {
  const operands = options.operands === undefined ? '' : ` ${options.operands}`;
  const required = new Set(options.schema.required);
  const variables = Object.entries(options.schema.properties).map(([name, schema]) => {
    const fallback =
      schema.default !== undefined
        ? `default ${JSON.stringify(schema.default)}`
        : required.has(name)
          ? '(required)'
          : 'unset by default';
    const description =
      typeof schema.description === 'string' ? `\n      ${schema.description}` : '';
    return `  ${name}  ${fallback}; ${constraintOf(schema)}${description}`;
  });
  return [
    `Usage: ${options.command} [--check] [--settings-file <path>]${operands}`,
    '',
    options.summary,
    '',
    'Flags:',
    '  -h, --help               print this and exit',
    '  --check                  validate the settings and check the servers without changing',
    '                           anything; print one line per problem; exit 0 when there is none,',
    `                           1 when the servers fail a check, ${ExitCode.needsOperator} when the settings are invalid`,
    '  --settings-file <path>   read settings from a file of NAME=value lines; the environment wins',
    '',
    'Settings (environment variables; an empty value counts as unset):',
    ...variables,
    '',
    'Tracing: OpenTelemetry, off unless OTEL_TRACES_EXPORTER=otlp or OTEL_EXPORTER_OTLP_ENDPOINT is',
    'set; then the standard OTEL_* variables apply (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER,',
    'OTEL_TRACES_SAMPLER_ARG, OTEL_EXPORTER_OTLP_PROTOCOL http/protobuf or http/json, ...).',
    ...(options.notes === undefined ? [] : ['', options.notes]),
    '',
  ].join('\n');
}

/** What is wrong with the command line, without parseArgs' advice on operands that look like flags. */
function usageProblem(error: Error): string {
  const unknown = /^Unknown option '([^']+)'/.exec(error.message);
  return unknown === null ? error.message : `unknown flag ${unknown[1] ?? ''}`;
}

/** Prints `lines` to stderr, each prefixed with the command, and exits with `code`. */
function fail(command: string, lines: readonly string[], code: number): never {
  for (const line of lines) process.stderr.write(`${command}: ${line}\n`);
  process.exit(code);
}

/** The environment, over the settings file's values when one is given. */
function environment(command: string, settingsFile: string | undefined, env: NodeJS.ProcessEnv) {
  if (settingsFile === undefined) return env;
  try {
    return { ...parseEnv(readFileSync(settingsFile, 'utf8')), ...env };
  } catch (error) {
    return fail(
      command,
      [`cannot read --settings-file ${settingsFile}: ${(error as Error).message}`],
      ExitCode.usage,
    );
  }
}

/**
 * Reads a program's command line and settings. `--help` prints {@link configHelp} and exits 0;
 * invalid flags exit 64, invalid settings exit 78, each problem on a line of its own on stderr;
 * `--check` runs `options.check` and exits. Otherwise returns the settings to run with.
 *
 * @example const { config } = await readCommandLine({ command: 'sluice-relay', summary, schema });
 */
export async function readCommandLine<S extends TObject>(
  options: CommandOptions<S>,
  argv: readonly string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): Promise<CommandLine<S>> {
  const { command } = options;
  let parsed: ReturnType<typeof parseArgs<{ options: typeof FLAGS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: [...argv], options: FLAGS, allowPositionals: true, strict: true });
  } catch (error) {
    return fail(command, [`${usageProblem(error as Error)} (see --help)`], ExitCode.usage);
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    process.stdout.write(configHelp(options));
    process.exit(ExitCode.ok);
  }
  if (options.operands === undefined && positionals.length > 0) {
    fail(command, [`unexpected operand ${positionals[0] ?? ''} (see --help)`], ExitCode.usage);
  }
  const settings = environment(command, values['settings-file'], env);
  for (const [name, value] of Object.entries(settings)) {
    // The OpenTelemetry SDK reads its variables from the environment itself.
    if (name.startsWith('OTEL_') && env[name] === undefined) env[name] = value;
  }
  const problems = [...configProblems(options.schema, settings), ...tracingProblems(settings)];
  if (problems.length > 0) fail(command, problems, ExitCode.needsOperator);
  const config = loadConfig(options.schema, settings);
  if (values.check === true) {
    const found = (await options.check?.(config, positionals)) ?? [];
    if (found.length > 0) fail(command, found, ExitCode.failure);
    process.stdout.write(`${command}: settings valid; every check passed\n`);
    process.exit(ExitCode.ok);
  }
  return { config, operands: positionals };
}

/**
 * What `read` derives from the settings (files they name, settings that go together); a
 * `config_invalid` it throws prints its line on stderr and exits 78, as invalid settings do.
 *
 * @example const security = settingOrExit('sluice-relay', () => kafkaSecurityOf(config));
 */
export function settingOrExit<T>(command: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (!isSluiceError(error, 'config_invalid')) throw error;
    return fail(command, [error.message], ExitCode.needsOperator);
  }
}
