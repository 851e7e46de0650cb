/**
 * The one interface every layer implements, QEMU block-status style.
 *
 * A layer answers only for itself: where it has nothing it says `absent`
 * ("ask the layer below"), never `zero`. `zero` means the layer itself says
 * the bytes are zero there (a qcow2 zero cluster, a hole in a backing image,
 * the area past a backing image's end).
 */
export type RunKind = 'data' | 'zero' | 'absent';

/** The engine's mapping unit (VolumeSectorSize): one owner per 4 KiB block. */
export const BLOCK_SIZE = 4096;

export interface BlockStatus {
  kind: RunKind;
  /** Bytes from the asked offset that share `kind`; >= 1, and may exceed the asked length. */
  length: number;
}

export interface Layer {
  /** File name for display and errors (e.g. `volume-snap-s1.img`). */
  readonly name: string;
  /** Path the layer was opened from. */
  readonly path: string;
  /** The layer's (virtual) size in bytes. */
  readonly size: number;
  /** Bytes actually allocated on disk (st_blocks * 512), for display. */
  readonly allocatedBytes: number;

  /**
   * The run starting at `offset`. `length` is a hint: the answer may be
   * shorter or, where it is free to know, longer. Runs of `data` are whole
   * 4 KiB blocks for chain files (the engine's granularity).
   */
  blockStatus(offset: number, length: number): BlockStatus;

  /**
   * Fills `buf[bufOffset, bufOffset+length)` with the layer's bytes at
   * `position`. Bytes at or beyond `size` read as zeros. Throws
   * LayerReadError on I/O errors or corrupt data.
   */
  read(buf: Buffer, bufOffset: number, length: number, position: number): void;

  /**
   * Like `read`, but only from the page cache: returns false (buffer
   * contents then unspecified) where the read would block on the disk.
   * Layers without it are read synchronously.
   */
  readNoWait?(buf: Buffer, bufOffset: number, length: number, position: number): boolean;

  /** Like `read`, on the libuv thread pool: for reads that would block. */
  readAsync?(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void>;

  /**
   * True for a layer whose bytes are not local (backup blocks on S3): `read`
   * may throw, and consumers read through `readAsync` (several large reads
   * in flight) and `readNoWait` (true where the bytes are already cached).
   * `blockStatus` stays synchronous: it answers from metadata.
   */
  readonly asyncOnly?: boolean;

  /**
   * Why the layer's bytes may have changed since it was opened (its file
   * grew, shrank or was written: the replica is in use), or undefined.
   * Cheap (an fstat); the mount asks once a second for open views.
   */
  changed?(): string | undefined;

  /**
   * Where the bytes of [offset, offset+length) lie in the layer's own file,
   * for a reader that preads them itself (the mount's C read path): calls
   * `each` for consecutive pieces covering the range. A piece's bytes are at
   * file position `offset + delta`, zeros at or past `fileEnd`; `fd` -1 marks
   * a piece only `read` can produce (a compressed cluster). Layers without it
   * are read through `read` only. Throws LayerReadError like `read`.
   */
  mapDirect?(offset: number, length: number, each: DirectPiece): void;

  close(): void;
}

export type DirectPiece = (offset: number, length: number, fd: number, delta: number, fileEnd: number) => void;

export function alignDown(n: number, a = BLOCK_SIZE): number {
  return n - (n % a);
}

export function alignUp(n: number, a = BLOCK_SIZE): number {
  const r = n % a;
  return r === 0 ? n : n + (a - r);
}
