/**
 * Broken backing images (missing, unreadable, another format, corrupt
 * qcow2 headers, tables and data) against every command. Problems found at
 * open fail every command with one line; problems found while reading fail
 * cat and export, and give EIO to a mounted reader while the daemon keeps
 * serving the rest. The cases live in helpers/broken-replicas.ts.
 */
import { BROKEN_CASES, describeBrokenCases } from './helpers/broken-replicas';

describeBrokenCases(BROKEN_CASES.filter((c) => c.base !== 'plain'));
