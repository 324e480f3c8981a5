// Each fault of the schedule, done to the soak's cluster. A fault waits until what it did
// has happened (the pod gone, the component back), never for the product to react.

import type { SoakCluster } from './cluster.ts';
import { SLOTS } from './cluster.ts';
import type { Tally } from './report.ts';
import { pickIndex, type Fault } from './schedule.ts';

export async function inject(cluster: SoakCluster, fault: Fault, tally: Tally): Promise<void> {
  const slot = pickIndex(fault.pick, SLOTS);
  const capture = cluster.captures[pickIndex(fault.pick, cluster.captures.length)]!;
  switch (fault.kind) {
    case 'podRecreate':
    case 'podRecreateSquatted': {
      const taker = await cluster.recreateSlotPod(slot, fault.kind === 'podRecreateSquatted');
      if (taker) tally.count(`old IP taken by ${taker}`);
      break;
    }
    case 'sandboxRecreate':
      await cluster.recreateSandbox(slot);
      break;
    case 'specEdit':
      await cluster.editCapture(capture);
      break;
    case 'captureRecreate':
      await cluster.deleteCapture(capture);
      await cluster.createCapture(capture);
      break;
    case 'agentKill': {
      const recovered = cluster.disrupt();
      await cluster.kill(cluster.agent);
      await cluster.startAgent();
      recovered();
      break;
    }
    case 'leaderKill': {
      // a standby takes over once the dead leader's Lease expires; a new standby replaces it
      await cluster.kill(await cluster.leader());
      await cluster.startController();
      break;
    }
    case 'apiServerRestart': {
      const recovered = cluster.disrupt();
      await cluster.cp.restartApiServer();
      recovered();
      break;
    }
    case 'etcdCompaction':
      await cluster.cp.compactEtcd();
      break;
  }
  tally.fault(fault.kind);
}
