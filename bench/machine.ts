/** The machine a result came from, for the report's header. */
import * as os from 'node:os';
import { firstLineOf } from './proc';

export interface Machine {
  date: string;
  cpu: string;
  cores: number;
  memory: string;
  kernel: string;
  node: string;
  qemu: string;
  fio: string;
  openssl: string;
  filesystem: string;
  chainfs: string;
  load: string;
}

export function describeMachine(root: string, dataDir: string): Machine {
  const commit = firstLineOf(['git', '-C', root, 'rev-parse', '--short', 'HEAD']);
  const dirty = firstLineOf(['git', '-C', root, 'status', '--porcelain']) !== '';
  const cpus = os.cpus();
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    cpu: cpus[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown',
    cores: cpus.length,
    memory: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    qemu: firstLineOf(['qemu-img', '--version']).replace(/^qemu-img version /, ''),
    fio: firstLineOf(['fio', '--version']),
    openssl: firstLineOf(['openssl', 'version']),
    filesystem: firstLineOf(['findmnt', '-n', '-o', 'FSTYPE', '-T', dataDir]) || 'unknown',
    chainfs: commit ? `${commit}${dirty ? ' + uncommitted changes' : ''}` : 'unknown',
    load: os.loadavg().map((l) => l.toFixed(2)).join(' '),
  };
}
