// The tests' throw-away databases are the benchmarks' too: the code lives beside the other local
// tooling (local/throwaway-database.ts), so that bench/ needs nothing from test/.
export { ADMIN_DATABASE_URL, createTestDatabase, type TestDatabase } from '#local/throwaway-database.ts';
