import { RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/**
 * How the functions reach the DataSync API and Secrets Manager:
 * - `nat-instance` (default): one t4g.nano NAT instance (about $7.36 a month with its public IPv4
 *   address and root volume): a tenth of a NAT gateway; a lost instance is not replaced by itself
 *   (redeploy, or choose `nat-gateway`);
 * - `nat-gateway`: a managed NAT gateway per `natGateways` ($36.50 a month each with its address);
 * - `ipv6`: no NAT at all: a dual-stack VPC whose egress-only internet gateway (free) carries
 *   IPv6 traffic only. Works only when the DataSync API publishes an AAAA record; Secrets
 *   Manager is reached on its dual-stack endpoint. The lean profile.
 */
export type Egress = 'nat-instance' | 'nat-gateway' | 'ipv6';

/** Props of {@link Network}. */
export interface NetworkProps {
  /** @default 'nat-instance' */
  readonly egress?: Egress;
  /** NAT gateways, for the `nat-gateway` egress. @default 1 */
  readonly natGateways?: number;
  /** Availability zones (RDS needs subnets in two). @default 2 */
  readonly maxAzs?: number;
  /** Retention of the VPC flow log group. @default logs.RetentionDays.ONE_MONTH */
  readonly flowLogRetention?: logs.RetentionDays;
  /**
   * A Secrets Manager interface endpoint in the function subnets ($14.60 a month in 2 AZs), for
   * secret reads that do not cross the NAT. @default false: secrets are read over the egress path
   */
  readonly secretsManagerEndpoint?: boolean;
}

/**
 * The VPC: isolated subnets for the database (no route out at all), private subnets with egress
 * for the functions (they call the upstream API and Secrets Manager), and the egress itself.
 */
export class Network extends Construct {
  readonly vpc: ec2.Vpc;
  readonly egress: Egress;
  readonly lambdaSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
  readonly databaseSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };
  /** The NAT instance provider (`nat-instance` egress): its security group admits the functions. */
  readonly natInstance?: ec2.NatInstanceProviderV2;
  /** The interface endpoint, when asked for: its security group admits the functions. */
  readonly secretsManagerEndpoint?: ec2.InterfaceVpcEndpoint;

  constructor(scope: Construct, id: string, props: NetworkProps = {}) {
    super(scope, id);
    this.egress = props.egress ?? 'nat-instance';
    const flowLogGroup = new logs.LogGroup(this, 'FlowLogs', {
      retention: props.flowLogRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    if (this.egress === 'nat-instance') {
      this.natInstance = ec2.NatProvider.instanceV2({
        instanceType: ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.NANO),
        machineImage: ec2.MachineImage.latestAmazonLinux2023({ cpuType: ec2.AmazonLinuxCpuType.ARM_64 }),
        // Standard credits: an unlimited T instance bills CPU above its baseline.
        creditSpecification: ec2.CpuCredits.STANDARD,
        // Nothing may connect in unless named (the functions, on 443, below).
        defaultAllowedTraffic: ec2.NatTrafficDirection.OUTBOUND_ONLY,
      });
    }
    const ipv6 = this.egress === 'ipv6';
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: props.maxAzs ?? 2,
      natGateways: this.egress === 'nat-gateway' ? (props.natGateways ?? 1) : ipv6 ? 0 : 1,
      ...(this.natInstance ? { natGatewayProvider: this.natInstance } : {}),
      ...(ipv6 ? { ipProtocol: ec2.IpProtocol.DUAL_STACK } : {}),
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'lambda', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 24 },
        { name: 'database', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      // Rejected flows only: enough to debug a security-group mistake, a fraction of the cost of ALL.
      flowLogs: {
        rejected: {
          destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogGroup),
          trafficType: ec2.FlowLogTrafficType.REJECT,
        },
      },
    });
    if (this.natInstance) {
      for (const instance of this.natInstance.gatewayInstances) {
        Validations.of(instance).acknowledge(
          {
            id: 'AwsSolutions-EC28',
            reason:
              'A NAT instance of a batch job: basic monitoring suffices; detailed monitoring would cost more than the instance.',
          },
          {
            id: 'AwsSolutions-EC29',
            reason:
              'The NAT instance holds no state: a replacement is a redeploy away, and termination protection would block cdk destroy.',
          },
          {
            id: 'AwsSolutions-EC26',
            reason: 'The root volume holds only the Amazon Linux image and no data of this project.',
          },
        );
      }
    }
    if (props.secretsManagerEndpoint) {
      this.secretsManagerEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
        service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
        subnets: this.lambdaSubnets,
        privateDnsEnabled: true,
        // Not the whole VPC: the stack admits the functions' security group alone.
        open: false,
      });
    }
  }

  /** Lets `peer` (the functions) reach the NAT instance or the endpoint on 443, and nothing else in. */
  admitFunctions(peer: ec2.ISecurityGroup): void {
    this.natInstance?.connections.allowFrom(peer, ec2.Port.tcp(443), 'HTTPS from the functions');
    this.secretsManagerEndpoint?.connections.allowFrom(
      peer,
      ec2.Port.tcp(443),
      'Secrets Manager from the functions',
    );
  }
}
