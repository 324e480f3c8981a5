import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import { packetCaptureCrd } from '../crds/crd.ts';

/** The PacketCapture CRD, exactly as crds/crd.ts builds it. */
export class PacketCaptureCrd extends Construct {
  constructor(scope: Construct, id: string) {
    super(scope, id);
    new ApiObject(this, 'crd', packetCaptureCrd);
  }
}
