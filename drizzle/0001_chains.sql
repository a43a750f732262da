ALTER TABLE "checkpoints" ADD COLUMN "chain_of" text;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "chain" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "range_hi_ts" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "range_lo_ts" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "range_done" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "chain_mode" text;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "chain_note" text;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "chains_planned" integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "plan_oldest_ts" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "resume_cursor" text;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "resume_position_ts" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "resume_position_id" text;--> statement-breakpoint
CREATE INDEX "checkpoints_chain_of_idx" ON "checkpoints" USING btree ("chain_of");--> statement-breakpoint
ALTER TABLE "checkpoints" ADD CONSTRAINT "checkpoints_chain_mode_check" CHECK ("checkpoints"."chain_mode" is null or "checkpoints"."chain_mode" in ('single', 'chains', 'fallback'));