ALTER TABLE "checkpoints" ADD COLUMN "hwm_ts" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "hwm_id" text;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "topup_signpost_ts" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "topup_signpost_id" text;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "topup_floor_ts" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "topup_started_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "topup_base_inserted" bigint;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "last_topup_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "last_topup_inserted" bigint;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "topups" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "late_beyond_lookback" bigint DEFAULT 0 NOT NULL;
