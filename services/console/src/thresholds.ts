// The numbers the console's stage statuses compare with: the alerts' thresholds, so a stage turns
// warning or critical where Prometheus' alert would (once its `for` has passed).
import { alertNamed } from '@sluice/alerts';

const threshold = (alert: string, name: string): number => {
  const value = alertNamed(alert).thresholds[name];
  if (value === undefined) throw new Error(`alert ${alert} has no threshold ${name}`);
  return value;
};

/** Stage thresholds, read once from @sluice/alerts. */
export interface Thresholds {
  outboxAgeWarningSeconds: number;
  outboxAgeCriticalSeconds: number;
  slotLagWarningBytes: number;
  slotLagCriticalBytes: number;
  safeWalCriticalBytes: number;
  projectionLagWarning: number;
  projectionLagCritical: number;
  /** The slot's confirmed position unmoved this long while the WAL grows: `confirmedStalled`. */
  confirmedStalledMs: number;
  /** A projection behind whose checkpoints have not moved this long is `stalled`. */
  projectionStalledMs: number;
}

/** The thresholds of {@link ALERTS}, and the console's own windows. */
export function alertThresholds(): Thresholds {
  return {
    outboxAgeWarningSeconds: threshold('SluiceOutboxEventAgeHigh', 'ageSeconds'),
    outboxAgeCriticalSeconds: threshold('SluiceOutboxEventAgeCritical', 'ageSeconds'),
    slotLagWarningBytes: threshold('SluiceSlotLagHigh', 'lagBytes'),
    slotLagCriticalBytes: threshold('SluiceSlotLagCritical', 'lagBytes'),
    safeWalCriticalBytes: threshold('SluiceSlotSafeWalLow', 'safeWalBytes'),
    projectionLagWarning: threshold('SluiceProjectionLagHigh', 'records'),
    projectionLagCritical: threshold('SluiceProjectionLagCritical', 'records'),
    confirmedStalledMs: 5 * 60_000,
    projectionStalledMs: 2 * 60_000,
  };
}
