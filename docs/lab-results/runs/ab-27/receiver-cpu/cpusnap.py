#!/usr/bin/env python3
# Usage: cpusnap.py LOG OUT: waits for "gangway: migrating" in LOG, snapshots every thread's CPU, waits for "round 1:", snapshots again, prints the biggest users.
import os, sys, time
log, out = sys.argv[1], sys.argv[2]
def snap():
    d = {}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            cmd = open(f'/proc/{p}/cmdline','rb').read().replace(b'\0',b' ').decode()[:90]
            for t in os.listdir(f'/proc/{p}/task'):
                s = open(f'/proc/{p}/task/{t}/stat').read()
                f = s.rsplit(')',1)[1].split()
                comm = s[s.index('(')+1:s.rindex(')')]
                d[(p,t)] = (int(f[11])+int(f[12]), comm, cmd)
        except OSError: pass
    return d
def wait(word):
    while True:
        try:
            if word in open(log).read(): return
        except OSError: pass
        time.sleep(0.05)
wait('gangway: migrating'); t0=time.time(); a=snap()
wait('round 1:'); t1=time.time(); b=snap()
rows=sorted(((b[k][0]-(a[k][0] if k in a else 0),k,b[k][1],b[k][2]) for k in b), reverse=True)
with open(out,'w') as o:
    print(f"window {t1-t0:.2f} s, total {sum(r[0] for r in rows)/100:.2f} cpu-s", file=o)
    byproc={}
    for d,k,comm,cmd in rows: byproc.setdefault((k[0],cmd),0); byproc[(k[0],cmd)]+=d
    for (p,cmd),d in sorted(byproc.items(), key=lambda x:-x[1])[:12]: print(f"{d/100:6.2f} {p} {cmd}", file=o)
    print("threads:", file=o)
    for d,k,comm,cmd in rows[:12]: print(f"{d/100:6.2f} {k[1]} {comm} ({k[0]})", file=o)
