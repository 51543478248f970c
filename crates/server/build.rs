//! `refinery::embed_migrations!` reads `migrations/` at compile time but does not tell Cargo:
//! without this a new migration file would not be embedded until some source file changed.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
