// The built-in specs and templates (templates/, OBS/) are embedded with include_dir; rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=specs");
    println!("cargo:rerun-if-changed=templates");
    println!("cargo:rerun-if-changed=OBS");
}
