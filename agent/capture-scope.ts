// The PacketCaptures this node's agent sees: those the controller placed on this node and
// those nobody has placed yet (controller/placement.ts says why labels), so a status write
// of a capture whose pods are elsewhere is never delivered here.

import { BehaviorSubject, combineLatest, defer, map, tap, type Observable } from 'rxjs';
import { nodeLabelKey, PLACED_LABEL } from '../controller/placement.ts';
import { GROUP, PLURAL, VERSION, type PacketCapture } from '../crds/packetcapture.ts';
import { isNotFound, kubeRequest } from '../kube/http.ts';
import type { Logger } from '../kube/log.ts';
import { SILENT_WATCH_MS, watchSnapshots, type Snapshot } from '../kube/watch.ts';
import type { KubeConfig } from '@kubernetes/client-node';

/** A capture that left the unplaced watch and may be on its way to the placed one. */
export interface Handover {
  capture: PacketCapture;
  until: number;
}

/**
 * Placement moves a capture from one watch to the other in one write, but the two watches
 * deliver it independently: between the unplaced watch's DELETED and the placed watch's
 * ADDED the capture would vanish and its running sessions end. And the DELETED does not say
 * which it was: the API server sends the object as it was before the write, so a placement
 * and a deletion look alike. A capture that may concern this node is therefore held while a
 * GET tells (gone, placed elsewhere: dropped; placed here: held until the placed watch
 * shows it, for at most as long as a watch may lag before it is re-listed).
 */
export const HANDOVER_MS = SILENT_WATCH_MS;

/** What the GET found says whether a held capture stays: only if it is placed on `node`. */
export function placedOn(found: PacketCapture | undefined, node: string): boolean {
  const labels = found?.metadata.labels ?? {};
  return labels[PLACED_LABEL] !== undefined && labels[nodeLabelKey(node)] !== undefined;
}

/** Placed here, unplaced, or on its way from one to the other; the placed watch's copy wins, being the newer. */
export function scopedCaptures(
  placed: Snapshot<PacketCapture>,
  unplaced: Snapshot<PacketCapture>,
  handovers: Map<string, Handover>,
  now: number,
): Snapshot<PacketCapture> {
  for (const [uid, h] of handovers) if (placed.has(uid) || h.until <= now) handovers.delete(uid);
  if (unplaced.size === 0 && handovers.size === 0) return placed;
  const all = new Map(placed);
  for (const [uid, c] of unplaced) if (!all.has(uid)) all.set(uid, c);
  for (const [uid, h] of handovers) if (!all.has(uid)) all.set(uid, h.capture);
  return all;
}

export interface NodeCapturesOptions {
  node: string;
  resyncMs?: number;
  silentMs?: number;
  log?: Logger;
  /**
   * whether a capture may concern this node (targets one of its pods): only those are held
   * and looked up when they leave the unplaced watch (default: all)
   */
  mayConcern?: (capture: PacketCapture) => boolean;
  /** every raw event of both watches; benchmarks count what reaches a node */
  onEvent?: (type: string, obj: unknown) => void;
}

export const nodeCaptures = (kc: KubeConfig, opts: NodeCapturesOptions): Observable<Snapshot<PacketCapture>> => defer(() => scopedWatch(kc, opts));

function scopedWatch(kc: KubeConfig, opts: NodeCapturesOptions): Observable<Snapshot<PacketCapture>> {
  const path = `/apis/${GROUP}/${VERSION}/${PLURAL}`;
  const { node, resyncMs, silentMs, log } = opts;
  const handovers = new Map<string, Handover>();
  const decided$ = new BehaviorSubject<void>(undefined);
  const hold = (capture: PacketCapture) => {
    const { uid, namespace, name } = capture.metadata;
    handovers.set(uid, { capture, until: Date.now() + HANDOVER_MS });
    // a hold that neither the GET nor the placed watch ends expires even when nothing else happens
    setTimeout(() => decided$.next(), HANDOVER_MS + 1).unref();
    kubeRequest<PacketCapture>(kc, 'GET', `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}/${name}`).then(
      (found) => {
        if (found.metadata.uid === uid && placedOn(found, node)) return;
        handovers.delete(uid);
        decided$.next();
      },
      (err: unknown) => {
        if (!isNotFound(err)) return log?.warn({ namespace, name, err: String(err) }, 'cannot tell whether a capture was placed here; keeping it until the watch shows');
        handovers.delete(uid);
        decided$.next();
      },
    );
  };
  let placed: Snapshot<PacketCapture> = new Map();
  const placed$ = watchSnapshots<PacketCapture>(kc, { path, labelSelector: nodeLabelKey(node), resyncMs, silentMs, log, onEvent: opts.onEvent }).pipe(
    tap((snapshot) => (placed = snapshot)),
  );
  const unplaced$ = watchSnapshots<PacketCapture>(kc, {
    path,
    labelSelector: `!${PLACED_LABEL}`,
    resyncMs,
    silentMs,
    log,
    // called before the snapshot without the capture is emitted
    onEvent: (type, obj) => {
      opts.onEvent?.(type, obj);
      const capture = obj as PacketCapture;
      if (type === 'DELETED' && !placed.has(capture.metadata.uid) && (opts.mayConcern?.(capture) ?? true)) hold(capture);
    },
  });
  return combineLatest([placed$, unplaced$, decided$]).pipe(map(([here, unplaced]) => scopedCaptures(here, unplaced, handovers, Date.now())));
}
