// The billing read model inside a process of the team's own, instead of `sluice-projector`: the
// process keeps its lifecycle (here it stops the projections on SIGTERM and exits with their
// status), and the projections resume from the checkpoints whichever way they ran before.
import { runProjections } from '@sluice/projector-service';
import { invoiceBalances, migrations } from './projections.js';

const running = await runProjections({
  projections: [invoiceBalances],
  migrations,
  env: process.env,
  ownsProcess: false,
});
process.once('SIGTERM', () => void running.stop());
// Also resolves when a consumer stops for good (status 70): a supervisor starts the process again.
process.exitCode = await running.stopped;
