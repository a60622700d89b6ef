export { auditLog } from './audit-log.js';
export { cartSummary } from './cart-summary.js';
export { viewMigrations } from './migrations.js';
/** The shop's views as a projection module: `sluice-projector` runs these before the projections. */
export { viewMigrations as migrations } from './migrations.js';
export { productSales } from './product-sales.js';
export { removedThenBought } from './removed-then-bought.js';
