/**
 * The N-API addon (native/): syscalls Node's fs lacks. All synchronous;
 * failures throw errors with Node-style `code` / `syscall` properties.
 */
import * as path from 'node:path';

export interface Native {
  /** lseek(SEEK_DATA): the next data offset at or after `offset`, or -1 if none (ENXIO). */
  seekData(fd: number, offset: number): number;
  /** lseek(SEEK_HOLE): the next hole at or after `offset` (EOF counts as a hole), or -1 past EOF. */
  seekHole(fd: number, offset: number): number;
  /** copy_file_range(2): bytes copied (may be short; 0 at EOF of the source). */
  copyFileRange(fdIn: number, offIn: number, fdOut: number, offOut: number, length: number): number;
  /**
   * copy_file_range(2) of [offIn, offIn+length) to offOut on the libuv thread pool (pread/pwrite
   * there where the kernel cannot copy between these files): resolves to the bytes copied, short
   * only at the input's end. Rejects with a Node-style error (`code`, `syscall`).
   */
  copyFileRangeAsync(fdIn: number, offIn: number, fdOut: number, offOut: number, length: number): Promise<number>;
  /**
   * A read-only, populated mapping of the file's [position, position+length), clipped to the
   * file's current end (nothing mapped past it). Unmapped by releaseMapping once no write from it
   * is in flight, or when collected.
   */
  mapRange(fd: number, position: number, length: number): Mapping;
  /**
   * Sets out[k] = 1 where segment k of the mapping's [offset, offset+length) holds a non-zero byte
   * (other entries are left as they are). Segments end where phase + (bytes from offset) is a
   * multiple of `granule`; bytes past what is mapped count as zeros. Returns the number of
   * segments. A file cut short under the mapping throws EIO.
   */
  nonZeroMapped(mapping: Mapping, offset: number, length: number, phase: number, granule: number, out: Uint8Array): number;
  /** pwrite of the mapping's [offset, offset+length) at outPosition, on the libuv thread pool; bytes past what is mapped are not written. */
  writeMappedAsync(mapping: Mapping, offset: number, length: number, outFd: number, outPosition: number): Promise<void>;
  /** Unmaps now, or once the mapping's last write is done. */
  releaseMapping(mapping: Mapping): void;
  /** fallocate(PUNCH_HOLE | KEEP_SIZE). */
  punchHole(fd: number, offset: number, length: number): void;
  /** preadv2(RWF_NOWAIT): bytes read, or -1 if the read would block (data not cached). */
  preadNoWait(fd: number, buf: Buffer, bufOffset: number, length: number, position: number): number;
  /** fcntl(F_SETPIPE_SZ): the new capacity, or -1 if `fd` is not a pipe or the size is refused. */
  setPipeSize(fd: number, bytes: number): number;
  /** flock(LOCK_EX | LOCK_NB): true if taken, false if held elsewhere; throws on other errors. Dropped when the holder's descriptor closes or it dies. */
  tryLock(fd: number): boolean;
  /** sync_file_range(SYNC_FILE_RANGE_WRITE) of the whole file on the thread pool: start writeback, do not wait for the disk. Rejects with the errno (`code`). */
  startWritebackAsync(fd: number): Promise<void>;
  /** posix_fadvise(WILLNEED) of [offset, offset+length) on the thread pool: start reading it into the page cache. Advisory: never rejects. */
  willNeedAsync(fd: number, offset: number, length: number): Promise<void>;
  /** sendfile(2) of [position, position+length) of `fdIn` to `fdOut`: bytes sent (short only at EOF); waits on a full pipe. */
  sendFile(fdOut: number, fdIn: number, position: number, length: number): number;
  /** write(2) of every byte, waiting while `fd` is a full non-blocking pipe. */
  writeAll(fd: number, buf: Buffer, offset: number, length: number): void;
}

/** An opaque handle of native.mapRange. */
export type Mapping = { readonly __mapping: unique symbol };

// Loaded from the build tree both when running from dist/ and from src/ (vitest).
export const native: Native = require(path.join(__dirname, '..', 'native', 'build', 'Release', 'chainfs_native.node'));
