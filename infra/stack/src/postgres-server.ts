import { SluiceError } from '@sluice/errors';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { appendFile, chmod, chown, copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { assertPortFree, isProcessAlive, pollUntil, runCommand, tailFile } from './processes.js';

/** Options for {@link createPostgresServer}. */
export interface PostgresServerOptions {
  /** Where the cluster's files live (created by `initdb` on first start). */
  dataDir: string;
  /** TCP port on 127.0.0.1. */
  port: number;
  /** A `postgresql.conf` fragment copied into the data directory on every start. */
  settingsFile?: string;
  /** Extra `-c name=value` settings, applied after `settingsFile` (e.g. `{ wal_level: 'replica' }`). */
  settings?: Record<string, string>;
  /** Directory holding `initdb`, `pg_ctl`, `postgres`. Found automatically when omitted. */
  binDir?: string;
  /**
   * Serve TLS with this certificate and key (PEM), copied into the data directory on every start;
   * plaintext connections are still accepted on the same port.
   */
  tls?: { certFile: string; keyFile: string };
  /** Addresses to listen on. Default `['127.0.0.1']`. */
  listenAddresses?: readonly string[];
}

/** A PostgreSQL server on the local machine, managed through `pg_ctl`. */
export interface PostgresServer {
  readonly port: number;
  readonly dataDir: string;
  /** The URL of `database` as the superuser `postgres`. */
  url(database?: string): string;
  /** Initialises the cluster if needed and starts it; resolves once it accepts queries. */
  start(): Promise<void>;
  /** Stops the server (`fast` finishes cleanly, `immediate` crashes it on purpose). */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** `pg_ctl restart`; `immediate` simulates a crash followed by recovery. */
  restart(mode?: 'fast' | 'immediate'): Promise<void>;
  isRunning(): Promise<boolean>;
  /** Creates `name` unless it exists. */
  ensureDatabase(name: string): Promise<void>;
}

const POSTGRES_USER = 'postgres';
/** Where the TLS certificate and key are copied, in the data directory. */
const TLS_FILES = { cert: 'sluice-server.crt', key: 'sluice-server.key' };

/**
 * Finds PostgreSQL's server binaries: the newest `/usr/lib/postgresql/<v>/bin`, then
 * `pg_config --bindir`.
 *
 * @throws SluiceError `postgres_binaries_missing`
 */
export function findPostgresBinDir(): string {
  const debianRoot = '/usr/lib/postgresql';
  if (existsSync(debianRoot)) {
    const versions = readdirSync(debianRoot)
      .filter((name) => existsSync(join(debianRoot, name, 'bin', 'pg_ctl')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0] !== undefined) return join(debianRoot, versions[0], 'bin');
  }
  try {
    const bindir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
    if (existsSync(join(bindir, 'pg_ctl'))) return bindir;
  } catch {
    // fall through to the error below
  }
  throw new SluiceError(
    'postgres_binaries_missing',
    'No PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and `pg_config --bindir`). ' +
      'Install PostgreSQL 14 or newer (e.g. `apt-get install postgresql`), set PG_BIN_DIR, ' +
      'or point DATABASE_URL at a running server.',
  );
}

/** PostgreSQL refuses to run as root; as root we run its binaries as the `postgres` user. */
function runningAsRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function postgresIds(): { uid: number; gid: number } {
  try {
    const uid = Number(execFileSync('id', ['-u', POSTGRES_USER], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', POSTGRES_USER], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch (error) {
    throw new SluiceError(
      'postgres_user_missing',
      'Running as root, but there is no `postgres` system user to run PostgreSQL as ' +
        '(create one with `useradd --system postgres`, or run as a normal user).',
      { cause: error },
    );
  }
}

/**
 * A PostgreSQL server under `dataDir`, listening on 127.0.0.1:`port` (or `listenAddresses`), with
 * trust authentication for local connections (a development and test server, never production).
 */
export function createPostgresServer(options: PostgresServerOptions): PostgresServer {
  return new LocalPostgresServer(options);
}

class LocalPostgresServer implements PostgresServer {
  readonly port: number;
  readonly dataDir: string;
  private readonly binDir: string;
  private readonly logFile: string;

  constructor(private readonly options: PostgresServerOptions) {
    this.binDir = options.binDir ?? findPostgresBinDir();
    this.port = options.port;
    this.dataDir = options.dataDir;
    this.logFile = join(options.dataDir, 'server.log');
  }

  url(database = 'postgres'): string {
    return `postgres://${POSTGRES_USER}@127.0.0.1:${this.port}/${database}`;
  }

  async start(): Promise<void> {
    if (await this.isRunning()) return;
    await assertPortFree(this.port, 'PostgreSQL');
    await this.initialise();
    await this.copySettingsFile();
    await this.copyTlsFiles();
    const result = await this.pgCommand('pg_ctl', [
      'start',
      '-D',
      this.dataDir,
      '-l',
      this.logFile,
      '-w',
      '-t',
      '120',
      '-o',
      this.serverArgs(),
    ]);
    if (result.code !== 0) {
      throw new SluiceError(
        'postgres_start_failed',
        `PostgreSQL did not start on port ${this.port}:\n${result.output}\n${await tailFile(this.logFile)}`,
      );
    }
  }

  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    if (!(await this.isRunning())) return;
    const pidText = await readFile(join(this.dataDir, 'postmaster.pid'), 'utf8').catch(() => '');
    const postmasterPid = Number(pidText.split('\n')[0]);
    const result = await this.pgCommand('pg_ctl', [
      'stop',
      '-D',
      this.dataDir,
      '-m',
      mode,
      '-w',
      '-t',
      '60',
    ]);
    if (result.code !== 0 && (await this.isRunning())) {
      throw new SluiceError('postgres_stop_failed', `pg_ctl stop failed:\n${result.output}`);
    }
    // pg_ctl returns once postmaster.pid is gone, a moment before the process itself is.
    if (Number.isInteger(postmasterPid) && postmasterPid > 0) {
      await pollUntil(
        async () => !(await isProcessAlive(postmasterPid, '')),
        30_000,
        () => new SluiceError('postgres_stop_failed', `postmaster ${postmasterPid} did not exit`),
        50,
      );
    }
  }

  async restart(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.stop(mode);
    await this.start();
  }

  async isRunning(): Promise<boolean> {
    if (!existsSync(join(this.dataDir, 'PG_VERSION'))) return false;
    return (await this.pgCommand('pg_ctl', ['status', '-D', this.dataDir])).code === 0;
  }

  async ensureDatabase(name: string): Promise<void> {
    const client = new pg.Client({ connectionString: this.url() });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`).catch((error: unknown) => {
        // 42P04 duplicate_database: it already exists, which is what we want.
        if ((error as { code?: string }).code !== '42P04') throw error;
      });
    } finally {
      await client.end();
    }
  }

  private pgCommand(tool: string, args: string[]) {
    const binary = join(this.binDir, tool);
    return runningAsRoot()
      ? runCommand('runuser', ['-u', POSTGRES_USER, '--', binary, ...args])
      : runCommand(binary, args);
  }

  private async initialise(): Promise<void> {
    if (existsSync(join(this.dataDir, 'PG_VERSION'))) return;
    await this.ensureOwnership();
    const result = await this.pgCommand('initdb', [
      '-D',
      this.dataDir,
      '-U',
      POSTGRES_USER,
      '--auth=trust',
      '--encoding=UTF8',
      '--locale=C',
    ]);
    if (result.code !== 0) {
      throw new SluiceError('postgres_initdb_failed', `initdb failed:\n${result.output}`);
    }
    await appendFile(
      join(this.dataDir, 'postgresql.conf'),
      "\ninclude_if_exists = 'sluice.conf'\n",
    );
  }

  private async ensureOwnership(): Promise<void> {
    await mkdir(this.dataDir, { recursive: true });
    await chmod(this.dataDir, 0o700);
    if (!runningAsRoot()) return;
    const { uid, gid } = postgresIds();
    await chown(this.dataDir, uid, gid);
    const reachable = await runCommand('runuser', [
      '-u',
      POSTGRES_USER,
      '--',
      'test',
      '-w',
      this.dataDir,
    ]);
    if (reachable.code !== 0) {
      throw new SluiceError(
        'postgres_data_dir_unreachable',
        `The postgres user cannot reach ${this.dataDir} (a parent directory is private to root); ` +
          'choose a data directory under a world-traversable path such as /tmp.',
      );
    }
  }

  private async copySettingsFile(): Promise<void> {
    if (this.options.settingsFile === undefined) return;
    const target = join(this.dataDir, 'sluice.conf');
    await copyFile(this.options.settingsFile, target);
    if (runningAsRoot()) {
      const { uid, gid } = postgresIds();
      await chown(target, uid, gid);
    }
  }

  /** The server reads its key only if the key is private to the user it runs as. */
  private async copyTlsFiles(): Promise<void> {
    if (this.options.tls === undefined) return;
    const copies = [
      [this.options.tls.certFile, TLS_FILES.cert],
      [this.options.tls.keyFile, TLS_FILES.key],
    ] as const;
    for (const [source, name] of copies) {
      const target = join(this.dataDir, name);
      await copyFile(source, target);
      await chmod(target, 0o600);
      if (runningAsRoot()) {
        const { uid, gid } = postgresIds();
        await chown(target, uid, gid);
      }
    }
  }

  private serverArgs(): string {
    const settings: Record<string, string> = {
      port: String(this.port),
      listen_addresses: (this.options.listenAddresses ?? ['127.0.0.1']).join(','),
      unix_socket_directories: this.dataDir,
      // Relative paths are read from the data directory.
      ...(this.options.tls === undefined
        ? {}
        : { ssl: 'on', ssl_cert_file: TLS_FILES.cert, ssl_key_file: TLS_FILES.key }),
      ...this.options.settings,
    };
    return Object.entries(settings)
      .map(([name, value]) => `-c ${name}=${value}`)
      .join(' ');
  }
}
