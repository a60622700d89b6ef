// The projector refuses, before touching PostgreSQL or Kafka, a PROJECTOR_PROJECTIONS naming a
// projection it does not have.
import { describe, expect, it } from 'vitest';
import { startService } from '../support/services.js';

describe('projector configuration', () => {
  it('exits with config_invalid naming the unknown projection and the known ones', async () => {
    const projector = startService('projector', {
      // Nothing listens here: the process must fail on its configuration first.
      DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
      KAFKA_BROKERS: '127.0.0.1:1',
      PROJECTOR_METRICS_PORT: '0',
      PROJECTOR_PROJECTIONS: 'cart_summary,cart_summray',
    });
    expect(await projector.exited()).not.toBe(0);
    expect(projector.output()).toContain('config_invalid');
    expect(projector.output()).toContain(
      'PROJECTOR_PROJECTIONS names unknown projections: cart_summray (known: cart_summary, product_sales, removed_then_bought, audit_log)',
    );
    expect(projector.output()).not.toContain('ECONNREFUSED');
  });
});
