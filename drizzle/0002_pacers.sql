CREATE TABLE "pacers" (
	"key" text PRIMARY KEY NOT NULL,
	"state" jsonb NOT NULL,
	"next_at" timestamp with time zone,
	"window_ms" integer,
	"header_delay_ms" integer,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
