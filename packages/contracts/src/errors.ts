/** The codes of the SluiceErrors this package throws. */
export type ContractsErrorCode =
  | 'event_definition_invalid'
  | 'event_payload_invalid'
  | 'event_type_unknown'
  | 'record_claim_checked'
  | 'record_malformed'
  | 'upcaster_cycle'
  | 'upcaster_duplicate';
