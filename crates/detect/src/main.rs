fn main() {
    eprintln!("detect: not implemented yet");
    std::process::exit(2);
}
