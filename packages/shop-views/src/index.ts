export { auditLog } from './audit-log.js';
export { cartSummary } from './cart-summary.js';
export { viewMigrations } from './migrations.js';
export { productSales } from './product-sales.js';
export { removedThenBought } from './removed-then-bought.js';
