import { emitHeartbeat, inspectSlot, type Relay, type SlotHealth } from '@sluice/relay';
import type { RelayContext } from './context.js';

/** Runs `task` every `ms`, never two at once (a slow database must not pile them up). */
function every(ms: number, task: () => Promise<void>): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    void task().finally(() => {
      if (!stopped) timer = setTimeout(tick, ms);
    });
  };
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/**
 * Heartbeats and slot checks while `relay` relays; returns what stops them. A slot lost or gone
 * while relaying is `fatal`: a restart cannot bring back what it held.
 */
export function watchSlot(
  context: RelayContext,
  relay: Relay,
  fatal: (error: unknown) => never,
): () => void {
  const { config, logger, pool } = context;
  const stopHeartbeats = every(config.RELAY_HEARTBEAT_MS, () =>
    emitHeartbeat(pool).catch((error: unknown) => logger.warn({ err: error }, 'heartbeat failed')),
  );
  const stopChecks = every(config.RELAY_SLOT_CHECK_MS, async () => {
    const health = await inspectSlot(pool, config.RELAY_SLOT).catch((error: unknown) => {
      logger.warn({ err: error }, 'slot check failed');
    });
    if (health !== undefined) checkSlot(context, relay, health, fatal);
  });
  return () => {
    stopHeartbeats();
    stopChecks();
  };
}

function checkSlot(
  { config, logger, metrics }: RelayContext,
  relay: Relay,
  health: SlotHealth,
  fatal: (error: unknown) => never,
): void {
  metrics.setSlot(health);
  metrics.setOldestUnpublished(relay.oldestUnpublished());
  if (!health.exists || health.walStatus === 'lost') {
    fatal(
      new Error(
        `replication slot ${config.RELAY_SLOT} is ${health.exists ? 'lost' : 'gone'} while relaying`,
      ),
    );
  }
  if (health.walStatus === 'unreserved') {
    logger.error(
      { slot: config.RELAY_SLOT, safeWalSizeBytes: health.safeWalSizeBytes },
      'slot in danger of being lost',
    );
  }
}
