// The part of fuse-native's API chainfs uses (the package ships no types).
declare module 'fuse-native' {
  type Cb = (...args: any[]) => void;
  interface FuseOps { [op: string]: ((...args: any[]) => void) | undefined }
  interface FuseOpts {
    displayFolder?: boolean; debug?: boolean; force?: boolean; mkdir?: boolean; timeout?: number | false;
    allowOther?: boolean; defaultPermissions?: boolean; maxRead?: number; fsname?: string; subtype?: string;
    kernelCache?: boolean; autoCache?: boolean; attrTimeout?: number; entryTimeout?: number; uid?: number; gid?: number;
  }
  class Fuse {
    constructor(mnt: string, ops: FuseOps, opts?: FuseOpts);
    readonly mnt: string;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    protected _fuseOptions(): string;
    static unmount(mnt: string, cb: Cb): void;
    static EPERM: number; static ENOENT: number; static EIO: number; static EBADF: number; static EACCES: number;
    static EISDIR: number; static ENOTDIR: number; static EINVAL: number; static EROFS: number; static ENOTSUP: number;
  }
  export = Fuse;
}
