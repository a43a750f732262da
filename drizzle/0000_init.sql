CREATE TABLE "checkpoints" (
	"source_id" text PRIMARY KEY DEFAULT 'default' NOT NULL,
	"cursor" text,
	"position_ts" timestamp with time zone,
	"position_id" text,
	"pages" bigint DEFAULT 0 NOT NULL,
	"events_inserted" bigint DEFAULT 0 NOT NULL,
	"duplicates_skipped" bigint DEFAULT 0 NOT NULL,
	"rejected" bigint DEFAULT 0 NOT NULL,
	"requests" bigint DEFAULT 0 NOT NULL,
	"rate_limited" bigint DEFAULT 0 NOT NULL,
	"total_reported" bigint,
	"next_request_at" timestamp with time zone,
	"last_rate_limit" jsonb,
	"status" text DEFAULT 'running' NOT NULL,
	"last_error" text,
	"lease_owner" text,
	"lease_expires_at" timestamp with time zone,
	"version" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"completed_at" timestamp with time zone,
	CONSTRAINT "checkpoints_status_check" CHECK ("checkpoints"."status" in ('running', 'complete', 'failed'))
);
--> statement-breakpoint
CREATE TABLE "events" (
	"id" uuid PRIMARY KEY NOT NULL,
	"session_id" uuid,
	"user_id" uuid,
	"type" text,
	"name" text,
	"properties" jsonb,
	"occurred_at" timestamp with time zone NOT NULL,
	"device_type" text,
	"browser" text,
	"source_id" text,
	"ingested_at" timestamp with time zone DEFAULT now()
);
--> statement-breakpoint
CREATE TABLE "rejected_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"source_id" text NOT NULL,
	"event_id" text,
	"reason" text NOT NULL,
	"raw" text NOT NULL,
	"raw_hash" text NOT NULL,
	"page_cursor" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "rejected_events_source_raw_hash_key" UNIQUE("source_id","raw_hash")
);
