#!/usr/bin/env node
// sluice-projector: runs the projections of the modules on its command line.
import { isSluiceError } from '@sluice/errors';
import type { KafkaErrorCode } from '@sluice/kafka';
import { ExitCode, readCommandLine, refusalExitCode } from '@sluice/service-kit';
import { checkSetup, problemLine } from './check.js';
import { projectorConfigSchema } from './config.js';
import { loadProjectionModules, moduleSpecs, type ModuleErrorCode } from './modules.js';
import { runProjections } from './run-projections.js';

const command = 'sluice-projector';

/** Errors an operator fixes in the command line or the modules: exit at once, one line. */
const SETUP_ERRORS: Partial<Record<string, ExitCode>> = {
  modules_missing: ExitCode.usage,
  module_not_found: ExitCode.needsOperator,
  module_failed: ExitCode.needsOperator,
  module_without_projection: ExitCode.needsOperator,
  projection_invalid: ExitCode.needsOperator,
  projection_duplicate: ExitCode.needsOperator,
  migrations_invalid: ExitCode.needsOperator,
  migration_conflict: ExitCode.needsOperator,
  config_invalid: ExitCode.needsOperator,
  topic_not_ready: ExitCode.unavailable,
} satisfies Record<ModuleErrorCode | 'config_invalid' | KafkaErrorCode, ExitCode>;

const { config, operands } = await readCommandLine({
  command,
  summary:
    'Runs projections: read models in PostgreSQL built from the events on Kafka. Each <module> ' +
    '(or PROJECTOR_MODULES) is a path or a package exporting projections made with ' +
    'defineProjection from @sluice/projector, and optionally `migrations` run before start.',
  operands: '<module>...',
  schema: projectorConfigSchema,
  notes:
    'Examples:\n' +
    '  sluice-projector ./dist/projections.js\n' +
    '  PROJECTOR_MODULES=@acme/billing-views PROJECTOR_PROJECTIONS=invoice_totals sluice-projector\n' +
    '  sluice-projector --check ./dist/projections.js\n' +
    'Exit status: 0 after SIGTERM or SIGINT; 70 when a consumer stopped for good; 69 when Kafka has\n' +
    'no leader for a partition of its topics 30 s after they were created; 78 for invalid\n' +
    'settings or modules; at start over TLS or SASL, 77 when Kafka refuses the credentials, 76 when\n' +
    "its certificate is not trusted, 68 when it is not valid for the broker's host name (the same for\n" +
    "PostgreSQL's certificate; 78 when PostgreSQL offers no TLS and sslmode requires it).",
  check: (settings, given) => checkSetup(settings, given, process.cwd()),
});

try {
  const modules = await loadProjectionModules(
    moduleSpecs(operands, config.PROJECTOR_MODULES),
    process.cwd(),
  );
  await runProjections({ ...modules, config });
} catch (error) {
  const exitCode = isSluiceError(error)
    ? (SETUP_ERRORS[error.code] ?? refusalExitCode(error))
    : undefined;
  if (exitCode === undefined) throw error;
  process.stderr.write(`${command}: ${problemLine(error)}\n`);
  process.exit(exitCode);
}
