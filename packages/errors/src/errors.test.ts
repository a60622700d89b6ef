import { describe, expect, it } from 'vitest';
import { SluiceError, errorMessage, isSluiceError } from './index.js';

type ExampleCode = 'slot_lost' | 'slot_missing';

describe('SluiceError', () => {
  it('carries its code, retriability and cause, and is an Error named SluiceError', () => {
    const cause = new Error('connection reset');
    const error = new SluiceError<ExampleCode>('slot_lost', 'The slot is lost', {
      cause,
      retriable: true,
    });
    expect(error).toBeInstanceOf(Error);
    expect(error).toBeInstanceOf(SluiceError);
    expect(error.name).toBe('SluiceError');
    expect(error.constructor.name).toBe('SluiceError');
    expect(String(error.stack)).toMatch(/^SluiceError: The slot is lost/);
    expect(error.code).toBe('slot_lost');
    expect(error.retriable).toBe(true);
    expect(error.cause).toBe(cause);
    expect(new SluiceError('x', 'm').retriable).toBe(false);
    expect('cause' in new SluiceError('x', 'm')).toBe(false);
  });

  it('checks codes at compile time against the union it is given', () => {
    // @ts-expect-error: not one of ExampleCode.
    const wrong = new SluiceError<ExampleCode>('slot_gone', 'm');
    const code: ExampleCode = new SluiceError<ExampleCode>('slot_missing', 'm').code;
    expect([wrong.code, code]).toEqual(['slot_gone', 'slot_missing']);
  });

  it('subclasses keep working', () => {
    class Retry extends SluiceError {
      constructor() {
        super('handler_retry', 'retry', { retriable: true });
      }
    }
    expect(isSluiceError(new Retry(), 'handler_retry')).toBe(true);
  });
});

describe('isSluiceError', () => {
  it('matches any SluiceError, or one code, and narrows to it', () => {
    const error: unknown = new SluiceError<ExampleCode>('slot_missing', 'gone');
    expect(isSluiceError(error)).toBe(true);
    expect(isSluiceError(error, 'slot_lost')).toBe(false);
    expect(isSluiceError(new Error('plain'))).toBe(false);
    if (!isSluiceError(error, 'slot_missing')) throw new Error('not narrowed');
    const narrowed: 'slot_missing' = error.code;
    expect(narrowed).toBe('slot_missing');
    if (error instanceof SluiceError) {
      // instanceof narrows to a string code, never to any.
      // @ts-expect-error: a string is not a number.
      const notANumber: number = error.code;
      expect(notANumber).toBe('slot_missing');
    }
  });
});

describe('errorMessage', () => {
  it('reads messages of errors and anything else thrown', () => {
    expect(errorMessage(new SluiceError('x', 'why'))).toBe('why');
    expect(errorMessage('text')).toBe('text');
  });
});
