// Small shared pieces: status badges, key/value lists, the confirm-with-reason dialog.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Status } from './api.js';

export function Badge({ status, children }: { status: string; children?: ComponentChildren }) {
  return <span class={`badge badge-${status}`}>{children ?? status.replace('_', ' ')}</span>;
}

/** A definition list of label → value pairs, each value with its own test id. */
export function Facts({
  items,
}: {
  items: [label: string, value: ComponentChildren, testId: string][];
}) {
  return (
    <dl class="facts">
      {items.map(([label, value, testId]) => (
        <div key={testId}>
          <dt>{label}</dt>
          <dd data-testid={testId}>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

export function statusOf(state: string): Status {
  if (state === 'running' || state === 'leading' || state === 'standby' || state === 'applied') {
    return 'ok';
  }
  if (state === 'down' || state === 'stalled' || state === 'blocked' || state === 'dead_lettered') {
    return 'critical';
  }
  return 'warning';
}

export interface ConfirmProps {
  title: string;
  /** What will happen, in words. */
  description: ComponentChildren;
  confirmLabel: string;
  /** Whether a reason must be given (it is always asked for). */
  reasonRequired: boolean;
  onConfirm: (reason: string) => Promise<void>;
  onClose: () => void;
}

/** A modal that asks for a reason, then runs the action once confirmed and shows its error. */
export function ConfirmDialog(props: ConfirmProps) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [reason, setReason] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  useEffect(() => dialog.current?.showModal(), []);
  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    setBusy(true);
    try {
      await props.onConfirm(reason.trim());
      props.onClose();
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
      setBusy(false);
    }
  };
  return (
    <dialog ref={dialog} class="confirm" data-testid="confirm-dialog" onClose={props.onClose}>
      <form onSubmit={(event) => void submit(event)}>
        <h2>{props.title}</h2>
        <p>{props.description}</p>
        <label>
          Reason{props.reasonRequired ? ' (required)' : ''}
          <textarea
            data-testid="confirm-reason"
            required={props.reasonRequired}
            value={reason}
            onInput={(event) => setReason(event.currentTarget.value)}
          />
        </label>
        {error !== undefined && (
          <p class="error" role="alert" data-testid="confirm-error">
            {error}
          </p>
        )}
        <div class="actions">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" data-testid="confirm-submit" disabled={busy}>
            {props.confirmLabel}
          </button>
        </div>
      </form>
    </dialog>
  );
}

/** The outcome of the last action, kept on the page until the next one. */
export function ActionResult({ text }: { text: string | undefined }) {
  if (text === undefined) return null;
  return (
    <p class="result" role="status" data-testid="action-result">
      {text}
    </p>
  );
}
