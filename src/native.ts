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
  /** fallocate(PUNCH_HOLE | KEEP_SIZE). */
  punchHole(fd: number, offset: number, length: number): void;
  /** preadv2(RWF_NOWAIT): bytes read, or -1 if the read would block (data not cached). */
  preadNoWait(fd: number, buf: Buffer, bufOffset: number, length: number, position: number): number;
  /** fcntl(F_SETPIPE_SZ): the new capacity, or -1 if `fd` is not a pipe or the size is refused. */
  setPipeSize(fd: number, bytes: number): number;
  /** sync_file_range(SYNC_FILE_RANGE_WRITE) of the whole file: start writeback, do not wait. */
  startWriteback(fd: number): void;
  /** sendfile(2) of [position, position+length) of `fdIn` to `fdOut`: bytes sent (short only at EOF); waits on a full pipe. */
  sendFile(fdOut: number, fdIn: number, position: number, length: number): number;
  /** write(2) of every byte, waiting while `fd` is a full non-blocking pipe. */
  writeAll(fd: number, buf: Buffer, offset: number, length: number): void;
}

// Loaded from the build tree both when running from dist/ and from src/ (vitest).
export const native: Native = require(path.join(__dirname, '..', 'native', 'build', 'Release', 'chainfs_native.node'));
