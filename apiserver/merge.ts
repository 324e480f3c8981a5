// Many agents' live pcapng streams as one (pure): one section header, every agent's
// interfaces renumbered into one sequence, each packet pointed at its interface's new number.
// An agent whose stream starts again (it restarted, or was reconnected) opens a new section
// there: its interfaces from then on are new ones, the old ones keep their numbers.

import { BLOCK, type Block } from '../pcapng/blocks.ts';

export class StreamMerger {
  private next = 0;
  /** per source, the merged number of each of its interfaces in its current section */
  private readonly interfaces = new Map<string, number[]>();

  /** How `block` from `source` goes out, or undefined when it does not (its section headers, anything unknown). */
  take(source: string, block: Block): Buffer | undefined {
    switch (block.type) {
      case 'section':
        this.interfaces.set(source, []);
        return undefined;
      case 'interface': {
        const ids = this.interfaces.get(source);
        if (!ids) throw new Error(`${source}: an interface before any section header`);
        ids.push(this.next++);
        return block.raw;
      }
      case 'packet': {
        const id = this.interfaces.get(source)?.[block.interfaceId];
        if (id === undefined) throw new Error(`${source}: a packet of interface ${block.interfaceId}, which it never described`);
        const out = Buffer.from(block.raw);
        if (out.readUInt32LE(0) !== BLOCK.EPB) throw new Error(`${source}: not an enhanced packet block`);
        out.writeUInt32LE(id, 8);
        return out;
      }
      default:
        return undefined;
    }
  }

  /** interfaces described so far, over all sources */
  get interfaceCount(): number {
    return this.next;
  }
}
