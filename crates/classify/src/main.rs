fn main() {
    eprintln!("classify: not implemented yet");
    std::process::exit(2);
}
