import {
  accessMode,
  clockTicks,
  hasFlag,
  listFds,
  listPids,
  pageSize,
  readCmdline,
  readCwd,
  readExe,
  readFdinfo,
  readLastPid,
  readNetSockets,
  readStat,
  readTcpActiveOpens,
  reapIfZombie,
} from "../platform/mod.ts";
import type { ProcPlatform } from "../sensors/mod.ts";

/** The sensors' view of Linux: /proc, with the counters that reveal what polling missed. */
export function linuxPlatform(): ProcPlatform {
  const page = pageSize();
  return {
    listPids,
    readStat(pid) {
      const s = readStat(pid);
      if (s === null) return null;
      return {
        pid: s.pid,
        comm: s.comm,
        state: s.state,
        ppid: s.ppid,
        pgrp: s.pgrp,
        session: s.session,
        cpuTicks: s.utime + s.stime,
        startTicks: s.starttime,
        rssBytes: s.rss * page,
      };
    },
    readCmdline,
    readExe: (pid) => readExe(pid)?.path ?? null,
    readCwd,
    listFds(pid) {
      const r = listFds(pid);
      return r.ok ? { ok: true, value: r.value } : { ok: false, reason: r.reason };
    },
    readFdFlags(pid, fd) {
      const info = readFdinfo(pid, fd);
      if (info === null || hasFlag(info.flags, "O_PATH")) return null;
      return { access: accessMode(info.flags), append: hasFlag(info.flags, "O_APPEND") };
    },
    readSockets(pid) {
      return (readNetSockets(pid) ?? []).map((s) => ({
        proto: s.proto,
        localIp: s.localAddress,
        localPort: s.localPort,
        remoteIp: s.remoteAddress,
        remotePort: s.remotePort,
        state: s.state,
        inode: s.inode,
      }));
    },
    lastPid: readLastPid,
    tcpActiveOpens: readTcpActiveOpens,
    clockTicks,
    reap: reapIfZombie,
  };
}
