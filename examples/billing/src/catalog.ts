// The billing team's events: the one place their types, versions and payload schemas live.
import { Type } from '@sinclair/typebox';
import { defineCatalog, defineEvent, type EventOf, type NewEventOf } from '@sluice/contracts';

const InvoiceId = Type.String({ format: 'uuid' });
const Cents = Type.Integer({ minimum: 1, maximum: 100_000_000_000 });

export const billing = defineCatalog(
  {
    'invoice.issued.v1': defineEvent(
      'invoice.issued.v1',
      'invoice',
      'An invoice was issued to a customer.',
      Type.Object({
        invoiceId: InvoiceId,
        customer: Type.String({ minLength: 1, maxLength: 200 }),
        amountCents: Cents,
      }),
    ),
    'invoice.paid.v1': defineEvent(
      'invoice.paid.v1',
      'invoice',
      'A payment was received for an invoice, in part or in full.',
      Type.Object({ invoiceId: InvoiceId, amountCents: Cents }),
    ),
  },
  { schemaIdBase: 'https://billing.example.com/schemas/' },
);

export type BillingEvent = EventOf<typeof billing>;
export type NewBillingEvent = NewEventOf<typeof billing>;
