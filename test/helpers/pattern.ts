/**
 * The bytes a scenario writes. Shared by the replica builder and the qemu
 * oracle: both must write exactly the same bytes, and this is the only code
 * they share besides the Scenario types.
 */

/** What a write puts on disk. `zero` is written data (allocated zeros), never a hole. */
export type DataSpec = { kind: 'seed'; seed: number } | { kind: 'zero' } | { kind: 'byte'; value: number };

/**
 * `length` bytes of `spec`. `seed` is xorshift32 restarted for every write:
 * state = seed; per byte: state ^= state << 13; state ^= state >>> 17;
 * state ^= state << 5 (uint32); byte = state & 0xff. This is the generator
 * of the engine fixture (shared/fixtures/engine-v1.4.4), so a scenario that
 * repeats its operations reproduces its bytes.
 */
export function patternBytes(spec: DataSpec, length: number): Buffer {
  switch (spec.kind) {
    case 'zero':
      return Buffer.alloc(length);
    case 'byte':
      if (!Number.isInteger(spec.value) || spec.value < 0 || spec.value > 255) {
        throw new Error(`byte pattern value ${spec.value} is not a byte`);
      }
      return Buffer.alloc(length, spec.value);
    case 'seed':
      return xorshift32(spec.seed, length);
  }
}

function xorshift32(seed: number, length: number): Buffer {
  let state = seed >>> 0;
  if (state === 0 || state !== seed) throw new Error(`xorshift32 seed ${seed} must be a nonzero uint32`);
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out[i] = state & 0xff;
  }
  return out;
}
