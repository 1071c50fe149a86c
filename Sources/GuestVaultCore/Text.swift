extension StringProtocol {
    /// The text without the white space (spaces, tabs, line breaks) at its ends, without
    /// Foundation (the per-VM executable links only FoundationEssentials).
    public func trimmingWhitespace() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }), let last = lastIndex(where: { !$0.isWhitespace }) else { return "" }
        return String(self[first...last])
    }
}
